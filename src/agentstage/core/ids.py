"""Ids that must be unique, not secret: model and tool call ids, span ids, trace ids.

They come from the process's pseudo-random generator, as in OpenTelemetry's own id generator: a
run makes several, and ``os.urandom`` (behind ``uuid4`` and ``secrets``) is a system call each
time. Nothing is authorised by knowing one of these; ids that guard access (API keys) still come
from ``secrets``. Python reseeds the generator in a forked child, so two workers never share a
sequence.
"""

from __future__ import annotations

import random

_bits = random.getrandbits


def new_call_id(prefix: str = "call") -> str:
    return f"{prefix}_{_bits(64):016x}"


def new_span_id() -> str:
    """16 hex digits, never all zero (an invalid span id in W3C trace context)."""
    return f"{_bits(64) or 1:016x}"


def new_trace_id() -> str:
    """32 hex digits, never all zero (an invalid trace id in W3C trace context)."""
    return f"{_bits(128) or 1:032x}"
