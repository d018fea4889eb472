"""JSON as RFC 8259 defines it, for what comes in through the doors.

Python's ``json`` module accepts two things no store or client can carry on: the constants ``NaN``,
``Infinity`` and ``-Infinity`` (not JSON; a run's events refuse them later, so the run failed
after it was accepted), and unpaired surrogates (``"\\ud800"``), which are valid JSON escapes but
no Unicode text: UTF-8 cannot encode them, so the store refused the run's rows and the door
answered 500 after part of the work was done. Both are refused here, when the request is read, with
a message that says where.

Errors are :class:`json.JSONDecodeError`, so every door's existing handling of malformed JSON
(problem+json ``malformed_json``, a WebSocket close, a gRPC ``INVALID_ARGUMENT``) applies.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Only a body that could hold a surrogate is walked: one with a \uD800 to \uDFFF escape (an emoji
# escaped as a pair is one too) or with a surrogate's own UTF-8 bytes (json decodes bytes with
# "surrogatepass").
_MAY_HOLD_SURROGATE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_MAY_HOLD_SURROGATE_TEXT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class StrictJSONError(json.JSONDecodeError):
    """JSON that Python reads but RFC 8259 text does not allow."""


def loads(document: str | bytes) -> Any:
    """``json.loads``, refusing non-finite numbers and text that is not Unicode."""

    def refuse_constant(name: str) -> Any:
        text = document if isinstance(document, str) else document.decode("utf-8", "replace")
        raise StrictJSONError(f"{name} is not a JSON number (numbers must be finite)", text, text.find(name))

    value = json.loads(document, parse_constant=refuse_constant)
    pattern = _MAY_HOLD_SURROGATE_BYTES if isinstance(document, bytes) else _MAY_HOLD_SURROGATE_TEXT
    if pattern.search(document):  # type: ignore[arg-type]  # the pattern matches the document's type
        where = unpaired_surrogate(value)
        if where is not None:
            path, character = where
            text = document if isinstance(document, str) else document.decode("utf-8", "replace")
            escape = f"\\u{ord(character):04x}"
            at = re.search(re.escape(escape), text, re.IGNORECASE)
            raise StrictJSONError(
                f"{path} holds an unpaired surrogate ({escape}), which is not Unicode "
                "text; escape a character outside the BMP as a surrogate pair, or send it as UTF-8",
                text,
                at.start() if at else 0,
            )
    return value


def unpaired_surrogate(value: Any, path: str = "") -> tuple[str, str] | None:
    """Which string (or key) holds the first lone surrogate, said for a message, and that surrogate."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return (f"the string at {path or 'the top level'}", found.group()) if found else None
    if isinstance(value, dict):
        for key, item in value.items():
            found_key = _SURROGATE.search(key)
            if found_key:
                return (f"a key of the object at {path or 'the top level'}", found_key.group())
            where = unpaired_surrogate(item, f"{path}.{key}" if path else key)
            if where is not None:
                return where
    elif isinstance(value, list):
        for index, item in enumerate(value):
            where = unpaired_surrogate(item, f"{path}[{index}]")
            if where is not None:
                return where
    return None
