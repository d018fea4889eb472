"""Generated from protos/agent.proto by scripts/gen-proto; do not edit."""
