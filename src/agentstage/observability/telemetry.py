"""Observation of one process, assembled from the settings: traces, metrics and logs.

:class:`Telemetry` is an event sink (the run service hands it every committed event) and the
doors' source of server spans and request counts. Each part can be turned off on its own
(``tracing.enabled``, ``metrics.enabled``, the log level); what is off costs nothing per event.

A run's spans are not built while it runs unless an OTLP collector waits for them: the store
already holds the run's events, so its span tree is derived from them when it is read
(:meth:`Telemetry.spans`, by the same :class:`RunTraces` that builds them live for the collector,
so both are the same spans). While a run goes, tracing only keeps what the events lack: each tool
call's timings (validation, work), and the doors' server spans.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracer, Tracer

from agentstage import __version__
from agentstage.core.events import RunEvent, ToolResulted
from agentstage.core.records import SpanRecord
from agentstage.observability import metrics as m
from agentstage.observability.config import MetricsSettings, TracingSettings
from agentstage.observability.doors import Doors
from agentstage.observability.export import OtlpExport, SpanKeeper, SpanStore, StoreProcessor, otlp_target
from agentstage.observability.logging import RunLog as RunLog
from agentstage.observability.logging import captured
from agentstage.observability.run_metrics import RunMetrics, standard
from agentstage.observability.tools import TIMINGS, TimingBook
from agentstage.observability.tracing import RunTraces

log = logging.getLogger("agentstage.observability")


def resource(settings: TracingSettings) -> Resource:
    """service.name and version; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured."""
    name = os.environ.get("OTEL_SERVICE_NAME") or settings.service_name
    return Resource.create({"service.name": name, "service.version": __version__})


class Telemetry:
    def __init__(
        self,
        store: SpanStore,
        tracing: TracingSettings,
        metrics: MetricsSettings,
        *,
        provider_type: Callable[[str], str] | None = None,
    ):
        self.tracing = tracing
        self.store = store
        self.provider_type = provider_type
        self.failures = 0
        self.keeper = SpanKeeper(store) if tracing.enabled and tracing.store else None
        self.resource = resource(tracing)
        target = otlp_target(tracing) if tracing.enabled else None
        self.otlp = OtlpExport(*target, self.resource) if target else None
        self._live_timings = TimingBook()
        # spans built as runs go: only for a collector (the store's copy is derived when read)
        self.traces = self._builder(self._export, self._live_timings) if self.otlp is not None else None
        self._timing = self.keeper is not None or self.traces is not None
        self.standard = standard() if metrics.enabled else None
        self.run_metrics = RunMetrics(self.standard, provider_type) if self.standard else None
        self.run_log = RunLog()
        self.tracer_provider: TracerProvider | None = None
        tracer: Tracer = NoOpTracer()
        if tracing.enabled:
            self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
            if self.keeper is not None:
                self.tracer_provider.add_span_processor(StoreProcessor(self.keeper))
            if self.otlp is not None:
                self.tracer_provider.add_span_processor(self.otlp.processor)
            tracer = self.tracer_provider.get_tracer("agentstage", __version__)
        self._doors = Doors(tracer, self.standard)
        self._parts: list[Callable[[Sequence[RunEvent]], None]] = []  # what each commit's events go to
        if self.run_metrics is not None:
            self._parts.append(self.run_metrics.deliver)
        if self.traces is not None:
            self._parts.append(self.traces.handle)
        self._parts.append(self.run_log.deliver)
        self.meter_provider: Any = None
        metric_target = otlp_target(tracing, "METRICS") if metrics.enabled else None
        if metric_target is not None:
            self._start_otlp_metrics(*metric_target, metrics.otlp_interval)
        m.forget_dead_processes()

    @property
    def doors(self) -> Doors:
        return self._doors

    # the event sink -------------------------------------------------------------------------------

    def deliver(self, events: Sequence[RunEvent]) -> None:
        """Count, trace and log committed events. Pure bookkeeping in memory: tool timings go to
        the keeper's queue, spans (for a collector) to the exporter's thread, log lines to the log
        writer's thread."""
        if self._timing:
            for event in events:
                if event.type == "tool.result":
                    self._take_timing(event)
        for deliver in self._parts:
            try:
                deliver(events)
            except Exception:  # a bug here loses observation of these events, never a run
                self.failures += 1
                if self.failures == 1:
                    log.exception("observing events failed; observation of some runs is incomplete")

    def _take_timing(self, event: RunEvent) -> None:
        """A tool call's timing, noted by its wrapper: kept with the run, and handed to the live
        span builder when there is one."""
        try:
            payload = event.payload
            assert isinstance(payload, ToolResulted)
            timing = TIMINGS.take(event.run_id, payload.call_id)
            if timing is None:
                return
            if self.keeper is not None:
                self.keeper.add(timing)
            if self.traces is not None:
                self._live_timings.put(timing)
        except Exception:  # a bug here loses a timing, never a run
            self.failures += 1
            if self.failures == 1:
                log.exception("observing events failed; observation of some runs is incomplete")

    def _export(self, span: SpanRecord) -> None:
        if self.otlp is not None:
            self.otlp.export(span)

    def _builder(self, emit: Callable[[SpanRecord], None], timings: TimingBook) -> RunTraces:
        return RunTraces(emit, capture_content=self.tracing.capture_content,
                         max_attribute_chars=self.tracing.max_attribute_chars, provider_type=self.provider_type,
                         timings=timings)  # fmt: skip

    # reading a trace ------------------------------------------------------------------------------

    async def spans(self, run_id: str, trace_id: str | None = None) -> list[SpanRecord]:
        """The run's spans, derived from its stored events and tool timings, with the spans kept
        as rows (the door spans of ``trace_id`` that belong to no run, and the spans of runs
        stored before spans were derived), oldest first. With tracing off or not kept: the rows."""
        await self.flush()
        stored = await self.store.spans(run_id=run_id, trace_id=trace_id)
        if self.keeper is None:
            return stored
        events = await self.store.events(run_id)
        book = TimingBook(capacity=max(len(events), 1))
        for timing in await self.store.tool_timings(run_id):
            book.put(timing)
        built: list[SpanRecord] = []
        self._builder(built.append, book).handle(events)
        by_id = {span.span_id: span for span in built} | {span.span_id: span for span in stored}
        return sorted(by_id.values(), key=lambda span: (span.start_ns, span.span_id))

    # what doors use -------------------------------------------------------------------------------

    def metrics_text(self) -> tuple[bytes, str]:
        return m.exposition()

    async def flush(self) -> None:
        if self.keeper is not None:
            await self.keeper.flush()

    def capture_logs(self) -> AbstractContextManager[list[str]]:
        return captured()

    # life cycle -----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Store the last spans, export what is pending (a few seconds at most), stop."""
        if self.keeper is not None:
            await self.keeper.aclose()
        await asyncio.to_thread(self._shutdown_exporters)  # they wait on the network: not on the loop
        m.process_exiting()

    def _shutdown_exporters(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # also shuts the OTLP processor down, after a flush
        elif self.otlp is not None:
            self.otlp.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown(timeout_millis=5000)
            m.detach_meter()

    def _start_otlp_metrics(self, endpoint: str, protocol: str, interval: float) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        from agentstage.observability.export import metric_exporter

        reader = PeriodicExportingMetricReader(
            metric_exporter(endpoint, protocol), export_interval_millis=int(interval * 1000)
        )
        self.meter_provider = MeterProvider(resource=self.resource, metric_readers=[reader])
        m.attach_meter(self.meter_provider.get_meter("agentstage", __version__))
