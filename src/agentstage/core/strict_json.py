"""JSON as RFC 8259 defines it, for what comes in through the doors.

Python's ``json`` module accepts what no store or client can carry on: the constants ``NaN``,
``Infinity`` and ``-Infinity`` and numbers too large for a double (``1e999`` reads as infinity),
which are not JSON numbers (a run's events refuse them later, so the run failed after it was
accepted, and a configuration file written with one is no longer JSON); and unpaired surrogates
(``"\\ud800"``, or their raw bytes), valid escapes but no Unicode text: UTF-8 cannot encode them, so
the store refused the run's rows and the door answered 500 after part of the work was done. All
are refused here, when the request is read, saying what and where, whatever the body's encoding
(UTF-8, or the UTF-16/32 that ``json`` also detects).

Errors are :class:`json.JSONDecodeError`, so every door's existing handling of malformed JSON
(problem+json ``malformed_json``, a WebSocket close, a gRPC ``INVALID_ARGUMENT``) applies.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Only a text that could hold a surrogate is walked: one with a \uD800 to \uDFFF escape (an emoji
# escaped as a pair is one too) or with a surrogate itself (decoded from its raw bytes).
_MAY_HOLD_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def unpaired_surrogate_in(text: str) -> re.Match[str] | None:
    """The first surrogate in decoded text: half an escaped pair, or bytes the locale could not
    decode (Python keeps those as surrogates, PEP 383). No UTF-8 store can keep it."""
    return _SURROGATE.search(text)


# The tokens a position is looked for among, once a document is refused: strings (skipped over,
# or searched for a surrogate), the non-finite constants, and numbers.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?Infinity|NaN|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?', re.DOTALL)


class StrictJSONError(json.JSONDecodeError):
    """JSON that Python reads but RFC 8259 text does not allow."""


class _NotFinite(ValueError):
    def __init__(self, token: str):
        super().__init__(token)
        self.token = token


def loads(document: str | bytes) -> Any:
    """``json.loads``, refusing non-finite numbers and text that is not Unicode."""
    if isinstance(document, bytes | bytearray):
        # As json does (its encoding detection, surrogatepass), so raw surrogate bytes become
        # surrogates here and are found below; bytes that are no text raise UnicodeDecodeError.
        text = bytes(document).decode(json.detect_encoding(document), "surrogatepass")
    else:
        text = document
    try:
        value = json.loads(text, parse_constant=_refuse, parse_float=_finite)
    except _NotFinite as refused:
        what = (
            f"{refused.token} is not a JSON number"
            if refused.token.lstrip("-") in ("Infinity", "NaN")
            else f"{refused.token} is beyond the range of a JSON number a store can keep"
        )
        raise StrictJSONError(f"{what} (numbers must be finite)", text, _position_of_number(text)) from None
    if _MAY_HOLD_SURROGATE.search(text):
        where = unpaired_surrogate(value)
        if where is not None:
            path, character = where
            raise StrictJSONError(
                f"unpaired surrogate (\\u{ord(character):04x}) in {path}: not Unicode text; escape a "
                "character outside the BMP as a surrogate pair, or send it as UTF-8",
                text,
                _position_of_surrogate(text),
            )
    return value


def _refuse(constant: str) -> Any:
    raise _NotFinite(constant)


def _finite(token: str) -> float:
    number = float(token)
    if math.isinf(number):
        raise _NotFinite(token)
    return number


def _position_of_number(text: str) -> int:
    """Where the first non-finite number is (strings are skipped: "NaN" in a text is text)."""
    for token in _TOKEN.finditer(text):
        found = token.group()
        if found[0] != '"' and (found.lstrip("-") in ("Infinity", "NaN") or math.isinf(float(found))):
            return token.start()
    return 0


def _position_of_surrogate(text: str) -> int:
    """Where the first string (or key) holding an unpaired surrogate starts."""
    for token in _TOKEN.finditer(text):
        found = token.group()
        if found[0] == '"' and _MAY_HOLD_SURROGATE.search(found) and _SURROGATE.search(json.loads(found)):
            return token.start()
    return 0


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
