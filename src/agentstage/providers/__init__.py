"""Model providers: the embedded local model, OpenAI-compatible servers, Anthropic, and scripted."""
