"""Making what tools return safe to record, and keeping events within a size.

A tool's output goes into the run's log, every door's stream and the model's next prompt. Whatever
a tool returns, the log must stay valid JSON of a bounded size, so :func:`json_safe` turns values
JSON cannot hold exactly into marked strings and refuses shapes that cannot be recorded at all
(cycles, absurd nesting). :func:`shrink_to_fit` cuts the longest strings of an event's data until it
fits its size cap, and says so in the text it cut: nothing is ever shortened silently.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SAFE_INTEGER = 2**53 - 1  # the largest integer every JSON reader holds exactly (I-JSON, RFC 7493)
MAX_DEPTH = 64
MAX_EXACT_DIGITS = 4000  # below CPython's int-to-str conversion limit (4,300 digits)
TRUNCATION_MARK = "…[truncated: {kept} of {total} characters kept]"


class UnsafeOutput(ValueError):
    """The value cannot be recorded as JSON (a cycle, nesting too deep, an unknown type)."""


@dataclass
class _Walk:
    max_string: int
    truncated: int = 0


def json_safe(value: Any, *, max_string: int = 1 << 20) -> tuple[Any, int]:
    """A JSON-safe copy of ``value`` and how many strings were cut to ``max_string`` characters.

    Integers beyond ±(2**53 - 1) become decimal strings (an approximation, marked as one, when they
    have too many digits to write exactly); NaN and infinities become strings; bytes become base64;
    tuples and sets become lists; mapping keys become strings. Raises :class:`UnsafeOutput`."""
    walk = _Walk(max_string)
    return _safe(value, walk, 0, set()), walk.truncated


def _safe(value: Any, walk: _Walk, depth: int, seen: set[int]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -SAFE_INTEGER <= value <= SAFE_INTEGER else big_integer_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value, walk)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": _cut(base64.b64encode(bytes(value)).decode("ascii"), walk)}
    if depth >= MAX_DEPTH:
        raise UnsafeOutput(f"the output is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        marker = id(value)
        if marker in seen:
            raise UnsafeOutput("the output contains a cycle (a value that contains itself)")
        seen.add(marker)
        try:
            if isinstance(value, Mapping):
                return {_key(k): _safe(v, walk, depth + 1, seen) for k, v in value.items()}
            items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
            return [_safe(item, walk, depth + 1, seen) for item in items]
        finally:
            seen.discard(marker)
    if hasattr(value, "model_dump"):
        return _safe(value.model_dump(mode="json"), walk, depth + 1, seen)
    raise UnsafeOutput(f"the output contains a {type(value).__name__}, which cannot be recorded as JSON")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return (
            json.dumps(key) if not isinstance(key, int) or abs(key) <= SAFE_INTEGER else big_integer_text(key)
        )
    raise UnsafeOutput(f"the output has a {type(key).__name__} as a mapping key")


def _cut(text: str, walk: _Walk) -> str:
    if len(text) <= walk.max_string:
        return text
    walk.truncated += 1
    return text[: walk.max_string] + TRUNCATION_MARK.format(kept=walk.max_string, total=len(text))


def big_integer_text(value: int) -> str:
    """An integer as text: exact up to :data:`MAX_EXACT_DIGITS` digits, else a marked approximation.

    Never converts a huge integer to decimal (CPython refuses beyond 4,300 digits, and the
    conversion is quadratic): the approximation comes from its logarithm."""
    sign = "-" if value < 0 else ""
    magnitude = -value if value < 0 else value
    if magnitude.bit_length() * math.log10(2) < MAX_EXACT_DIGITS:
        return sign + str(magnitude)
    logarithm = math.log10(magnitude)
    exponent = math.floor(logarithm)
    mantissa = 10 ** (logarithm - exponent)
    return f"{sign}≈{mantissa:.9f}e+{exponent} (an integer of {exponent + 1} digits, too long to write out)"


def shrink_to_fit(data: dict[str, Any], limit: int) -> dict[str, Any] | None:
    """Cut the longest strings of ``data`` (marking each cut) until its JSON is at most ``limit``
    bytes; None if even that cannot make it fit."""
    data = json.loads(json.dumps(data))  # a private copy
    for _ in range(64):
        size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
        if size <= limit:
            return data
        path, longest = _longest_string(data)
        if path is None or len(longest) < 64:
            return None
        excess = size - limit
        keep = max(len(longest) - excess - 128, 0)
        _assign(data, path, longest[:keep] + TRUNCATION_MARK.format(kept=keep, total=len(longest)))
    return None


def _longest_string(value: Any, path: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...] | None, str]:
    best: tuple[tuple[Any, ...] | None, str] = (None, "")
    children: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    elif isinstance(value, str):
        return path, value
    for key, child in children:
        found = _longest_string(child, (*path, key))
        if found[0] is not None and len(found[1]) > len(best[1]):
            best = found
    return best


def _assign(data: Any, path: tuple[Any, ...], value: str) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value
