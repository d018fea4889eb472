"""Server spans and request metrics for the doors (HTTP, WebSocket, gRPC).

A door wraps each call it serves in :meth:`Doors.request`: the caller's W3C ``traceparent`` (from
the headers or gRPC metadata) becomes the parent of a SERVER span, which is current while the
call is served — so a run started inside continues the caller's trace — and the call is counted
in ``agent_door_requests_total`` when it ends.

The gRPC interceptor (``interfaces/grpc/interceptor.py``) plugs in like the HTTP middleware::

    with observe.through("grpc"), telemetry.doors.request(
        "grpc", method, dict(metadata), {"rpc.system": "grpc", "rpc.method": method}
    ) as scope:
        ...  # serve the call
        scope.finish("OK")   # or the status code's name, with error=… when it failed
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentstage.observability.masking import redact
from agentstage.observability.run_metrics import Standard

_PROPAGATOR = TraceContextTextMapPropagator()


class RequestScope:
    def __init__(self, span: trace.Span, door: str, method: str, metrics: Standard | None):
        self.span = span
        self.door = door
        self.method = method
        self.metrics = metrics
        self.started = time.perf_counter()
        self.status: str | None = None
        self.error: str | None = None

    @property
    def traceparent(self) -> str | None:
        context = self.span.get_span_context()
        if not context.is_valid:
            return None
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def finish(self, status: str, *, error: str | None = None) -> None:
        self.status, self.error = status, error

    def rename(self, name: str) -> None:
        """Name the span and the metric's method after what was served (``POST /api/v1/…``), once
        the door knows it (HTTP routes are matched inside the call)."""
        self.method = name
        self.span.update_name(name)

    def _end(self, raised: BaseException | None) -> None:
        status = self.status or ("error" if raised is not None else "unknown")
        error = self.error or (type(raised).__name__ if raised is not None else None)
        if self.span.is_recording():
            if status.isdigit():
                self.span.set_attribute("http.response.status_code", int(status))
            else:
                self.span.set_attribute("rpc.grpc.status_code", status)
            if error:
                self.span.set_attribute("error.type", error)
                self.span.set_status(Status(StatusCode.ERROR, redact(error)))
        self.span.end()
        if self.metrics is not None:
            self.metrics.door_requests.inc(door=self.door, method=self.method, status=status)
            self.metrics.door_duration.observe(
                time.perf_counter() - self.started, door=self.door, method=self.method
            )


class Doors:
    def __init__(self, tracer: Tracer, metrics: Standard | None):
        self.tracer = tracer
        self.metrics = metrics

    @contextmanager
    def request(
        self, door: str, name: str, headers: Mapping[str, str], attributes: Mapping[str, str | int]
    ) -> Iterator[RequestScope]:
        parent = _PROPAGATOR.extract({k.lower(): v for k, v in headers.items() if k.lower() == "traceparent"})
        clean = {key: redact(value) if isinstance(value, str) else value for key, value in attributes.items()}
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=clean)
        scope = RequestScope(span, door, str(attributes.get("http.request.method", name)), self.metrics)
        raised: BaseException | None = None
        try:
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                yield scope
        except BaseException as error:
            raised = error
            raise
        finally:
            scope._end(raised)
