"""Where a run comes from, as observation sees it: the door and the caller's trace.

Doors open a request scope around every call they serve (:class:`DoorObserver`, built by wiring
from the observability layer). Inside it the door's name and the caller's span are current, and
:func:`origin` — called once by ``RunService.start`` — reads them, so a run started by an HTTP
request or a gRPC call continues the caller's trace and is counted under its door. The caller's
span comes from an explicit W3C ``traceparent`` on the request, else from the OpenTelemetry
context (the door's server span, or the span of a program that embeds the SDK), else the run
starts a new trace.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import trace

from agentstage.core.ids import new_trace_id
from agentstage.core.records import SpanRecord

TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-[0-9a-f]{2}$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

_door: ContextVar[str | None] = ContextVar("agentstage_door", default=None)


@dataclass(frozen=True)
class Origin:
    door: str
    trace_id: str
    parent_span_id: str | None = None


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, span id) of a valid W3C ``traceparent``; None for anything else (ignored, as the
    W3C rules say: an invalid header starts a new trace instead of failing the request)."""
    if not value:
        return None
    match = TRACEPARENT.match(value.strip().lower())
    if match is None or match["trace"] == _ZERO_TRACE or match["span"] == _ZERO_SPAN:
        return None
    return match["trace"], match["span"]


def origin(traceparent: str | None = None) -> Origin:
    """The door and trace of a run being started in this context."""
    door = _door.get() or "sdk"
    explicit = parse_traceparent(traceparent)
    if explicit is not None:
        return Origin(door, *explicit)
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        return Origin(door, format(current.trace_id, "032x"), format(current.span_id, "016x"))
    return Origin(door, new_trace_id())


@contextmanager
def through(door: str) -> Iterator[None]:
    """Runs started inside this block came through ``door`` (``cli``, ``http``, ``grpc``…)."""
    token = _door.set(door)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # a stream closed from another context
            _door.reset(token)


class RequestScope(Protocol):
    """One request a door serves, open for as long as the door serves it."""

    @property
    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the request's server span (to hand on, or to answer with)."""
        ...

    def finish(self, status: str, *, error: str | None = None) -> None:
        """Record how the request ended: ``status`` is the door's own (``200``, ``NOT_FOUND``…);
        ``error`` names the error type when it failed."""
        ...

    def rename(self, name: str) -> None:
        """Name what was served, once known (``POST /api/v1/agent/run``): span name and metric."""
        ...


class DoorObserver(Protocol):
    def request(
        self, door: str, name: str, headers: Mapping[str, str], attributes: Mapping[str, str | int]
    ) -> AbstractContextManager[RequestScope]:
        """A server span for one request (continuing the caller's ``traceparent`` from
        ``headers``), current inside the block; counted when it ends. Doors enter
        :func:`through` around it so runs started inside know their door."""
        ...


class Telemetry(Protocol):
    """What doors use of observation (built by wiring from ``agentstage.observability``)."""

    @property
    def doors(self) -> DoorObserver: ...

    def metrics_text(self) -> tuple[bytes, str]:
        """Every metric of every worker process as Prometheus text, and its content type."""
        ...

    async def flush(self) -> None:
        """Make every span finished so far visible in the store."""
        ...

    async def spans(self, run_id: str, trace_id: str | None = None) -> list[SpanRecord]:
        """The spans of a run's trace kept so far (and the door spans of ``trace_id`` that
        started it), oldest first."""
        ...

    def capture_logs(self) -> AbstractContextManager[list[str]]:
        """Collect every log line (JSON, all levels) written inside the block."""
        ...
