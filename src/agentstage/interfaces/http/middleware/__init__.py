"""Pure ASGI middleware, one concern per module, so streamed responses are never buffered."""
