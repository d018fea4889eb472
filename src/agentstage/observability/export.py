"""Where trace data goes: the store (always, unless turned off) and an OTLP collector (when set).

A run's own spans are derived from its stored events when its trace is read, so the store needs
only what events do not hold: tool calls' timings and the doors' server spans. :class:`SpanKeeper`
buffers both and writes them in batches from one task, so a run never waits on it; when the store
cannot keep up, the oldest waiting ones are dropped (counted).
:class:`OtlpExport` hands spans to OpenTelemetry's batch processor, whose thread exports them over
OTLP (gRPC or HTTP/protobuf); an unreachable collector is reported once, never fails a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agentstage import __version__
from agentstage.core.events import RunEvent
from agentstage.core.records import SpanRecord, ToolTiming
from agentstage.core.tasks import stop_task
from agentstage.observability import metrics
from agentstage.observability.config import TracingSettings

log = logging.getLogger("agentstage.observability")
SCOPE = InstrumentationScope("agentstage", __version__)
_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "server": SpanKind.SERVER,
          "producer": SpanKind.PRODUCER, "consumer": SpanKind.CONSUMER}  # fmt: skip
_KIND_NAMES = {kind: name for name, kind in _KINDS.items()}
_STATUS = {"ok": StatusCode.OK, "error": StatusCode.ERROR, "unset": StatusCode.UNSET}


class SpanStore(Protocol):
    """What observation needs of the store: to keep trace data, and to read a run's back."""

    async def add_spans(self, records: Sequence[SpanRecord]) -> None: ...

    async def add_tool_timings(self, timings: Sequence[ToolTiming]) -> None: ...

    async def spans(self, *, run_id: str | None = None, trace_id: str | None = None) -> list[SpanRecord]: ...

    async def tool_timings(self, run_id: str) -> list[ToolTiming]: ...

    async def events(self, run_id: str, *, after: int = 0, limit: int | None = None) -> list[RunEvent]: ...


class SpanKeeper:
    def __init__(
        self, store: SpanStore, *, interval: float = 0.25, batch: int = 200, max_pending: int = 100_000
    ):
        """``batch``: spans per transaction. On SQLite spans share the one write connection with the runs'
        writes, so a run's commit waits behind at most one such transaction: kept short."""
        self.store = store
        self.interval = interval
        self.batch = batch
        self.max_pending = max_pending
        self._pending: deque[SpanRecord | ToolTiming] = deque()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.dropped = 0
        self.failures = 0

    def add(self, span: SpanRecord | ToolTiming) -> None:
        """Keep a span, or a tool call's timing."""
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.dropped += 1
            metrics.dropped("spans")
            if self.dropped == 1:
                log.warning("spans are produced faster than the store takes them; dropping (counted)")
        self._pending.append(span)
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no loop running: the next flush() writes them
                self._task = asyncio.get_running_loop().create_task(self._loop(), name="agentstage-spans")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        """Write every span waiting now."""
        async with self._lock:
            while self._pending:
                count = min(len(self._pending), self.batch)
                items = [self._pending.popleft() for _ in range(count)]
                spans = [item for item in items if isinstance(item, SpanRecord)]
                timings = [item for item in items if isinstance(item, ToolTiming)]
                try:
                    if timings:
                        await self.store.add_tool_timings(timings)
                    if spans:
                        await self.store.add_spans(spans)
                except Exception as error:  # the store's trouble is reported by the run writes; count ours
                    self.failures += 1
                    self.dropped += len(items)
                    metrics.dropped("spans", len(items))
                    if self.failures == 1:
                        log.warning("spans could not be stored (%s: %s); they are dropped, counted",
                                    type(error).__name__, error)  # fmt: skip

    async def aclose(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        await self.flush()


class StoreProcessor(SpanProcessor):
    """Keeps the spans of the OpenTelemetry SDK (the doors' server spans) in the store too."""

    def __init__(self, keeper: SpanKeeper):
        self.keeper = keeper

    def on_end(self, span: ReadableSpan) -> None:
        self.keeper.add(to_record(span))


def to_record(span: ReadableSpan) -> SpanRecord:
    context = span.context
    assert context is not None
    parent = span.parent
    attributes = dict(span.attributes or {})
    return SpanRecord(
        trace_id=format(context.trace_id, "032x"),
        span_id=format(context.span_id, "016x"),
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        parent_span_id=format(parent.span_id, "016x") if parent is not None else None,
        run_id=str(attributes["agentstage.run_id"]) if "agentstage.run_id" in attributes else None,
        kind=_KIND_NAMES.get(span.kind, "internal"),
        status={StatusCode.OK: "ok", StatusCode.ERROR: "error"}.get(span.status.status_code, "unset"),
        status_message=span.status.description,
        attributes={
            key: list(value) if isinstance(value, tuple) else value for key, value in attributes.items()
        },
        events=[
            {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
    )


def to_readable(span: SpanRecord, resource: Resource) -> ReadableSpan:
    flags = TraceFlags(TraceFlags.SAMPLED)
    trace_id = int(span.trace_id, 16)
    parent = (
        SpanContext(trace_id, int(span.parent_span_id, 16), is_remote=True, trace_flags=flags)
        if span.parent_span_id
        else None
    )
    return ReadableSpan(
        name=span.name,
        context=SpanContext(trace_id, int(span.span_id, 16), is_remote=False, trace_flags=flags),
        parent=parent,
        resource=resource,
        attributes=span.attributes,
        events=[Event(e["name"], e.get("attributes") or {}, e["time_ns"]) for e in span.events],
        kind=_KINDS.get(span.kind, SpanKind.INTERNAL),
        status=Status(
            _STATUS.get(span.status, StatusCode.UNSET),
            span.status_message if span.status == "error" else None,
        ),
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=SCOPE,
    )


# OTLP ------------------------------------------------------------------------------------------


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def otlp_target(settings: TracingSettings, signal: str = "TRACES") -> tuple[str, str] | None:
    """(endpoint, protocol) for a signal, or None when OTLP export is not configured (or the SDK
    is disabled / the exporter set to ``none`` by the standard variables)."""
    if (_env("OTEL_SDK_DISABLED") or "").lower() == "true":
        return None
    if (_env(f"OTEL_{signal}_EXPORTER") or "otlp").lower() == "none":
        return None
    endpoint = (
        _env(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT") or settings.otlp_endpoint
    )
    if not endpoint:
        return None
    protocol = (
        _env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") or settings.otlp_protocol
    )
    return endpoint, protocol


def _http_endpoint(endpoint: str, path: str, signal: str) -> str | None:
    """The HTTP exporter adds ``/v1/traces`` only to the generic variable; do it for config too.
    A signal-specific variable is used as is (the exporter reads it itself)."""
    if _env(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"):
        return None
    return endpoint.rstrip("/") + path


def span_exporter(endpoint: str, protocol: str) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        insecure = endpoint.startswith("http://") or None
        return GrpcExporter(endpoint=endpoint, insecure=insecure)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=_http_endpoint(endpoint, "/v1/traces", "TRACES"))


def metric_exporter(endpoint: str, protocol: str) -> Any:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://") or None)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    return HttpExporter(endpoint=_http_endpoint(endpoint, "/v1/metrics", "METRICS"))


class ReportingExporter(SpanExporter):
    """Says once that export fails (and once that it works again) instead of once per batch."""

    def __init__(self, inner: SpanExporter, endpoint: str):
        self.inner = inner
        self.endpoint = endpoint
        self.failing = False
        self.failed_batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as error:  # an exporter bug must not kill the export thread
            result = SpanExportResult.FAILURE
            detail = f"{type(error).__name__}: {error}"
        else:
            detail = "the collector did not accept them"
        if result is SpanExportResult.SUCCESS:
            if self.failing:
                log.warning("OTLP span export to %s works again", self.endpoint)
            self.failing = False
        else:
            self.failed_batches += 1
            if not self.failing:
                log.warning("OTLP span export to %s fails (%s); spans are still kept in the store, "
                            "and this is said once until it works again", self.endpoint, detail)  # fmt: skip
            self.failing = True
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def quiet_exporter_logs() -> None:
    """The OTLP exporters log every failed attempt; :class:`ReportingExporter` says it once."""
    for name in (
        "opentelemetry.exporter.otlp",
        "opentelemetry.sdk.trace.export",
        "opentelemetry.sdk.metrics",
    ):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class OtlpExport:
    def __init__(self, endpoint: str, protocol: str, resource: Resource):
        quiet_exporter_logs()
        self.endpoint = endpoint
        self.resource = resource
        self.exporter = ReportingExporter(span_exporter(endpoint, protocol), endpoint)
        self.processor = BatchSpanProcessor(self.exporter, schedule_delay_millis=1000)

    def export(self, span: SpanRecord) -> None:
        self.processor.on_end(to_readable(span, self.resource))

    def shutdown(self, timeout: float = 5.0) -> None:
        self.processor.force_flush(int(timeout * 1000))
        self.processor.shutdown()  # type: ignore[no-untyped-call]
