"""The HTTP door: FastAPI routes over the run service, SSE and WebSocket streams."""
