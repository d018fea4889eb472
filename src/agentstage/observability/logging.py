"""JSON log lines on stderr: one object per line, secrets masked, ready for any log pipeline."""

from __future__ import annotations

import json
import logging
import sys

from agentstage.observability.masking import mask_value


class JsonLines(logging.Formatter):
    """Records that are already JSON objects pass through; others become ``{level, logger, event}``."""

    def format(self, record: logging.LogRecord) -> str:
        message = mask_value(record.getMessage())
        if message.startswith("{"):
            return message
        body = {"level": record.levelname.lower(), "logger": record.name, "event": message}
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body)


def configure_json_logging(level: str) -> None:
    """Send the ``agentstage`` loggers to stderr as JSON lines (idempotent)."""
    root = logging.getLogger("agentstage")
    if any(isinstance(h.formatter, JsonLines) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
