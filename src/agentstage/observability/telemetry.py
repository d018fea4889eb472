"""Observation of one process, assembled from the settings: traces, metrics and logs.

:class:`Telemetry` is an event sink (the run service hands it every committed event) and the
doors' source of server spans and request counts. Each part can be turned off on its own
(``tracing.enabled``, ``metrics.enabled``, the log level); what is off costs nothing per event.
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
from agentstage.core.events import RunEvent
from agentstage.core.records import SpanRecord
from agentstage.observability import metrics as m
from agentstage.observability.config import MetricsSettings, TracingSettings
from agentstage.observability.doors import Doors
from agentstage.observability.export import OtlpExport, SpanKeeper, SpanStore, StoreProcessor, otlp_target
from agentstage.observability.logging import RunLog as RunLog
from agentstage.observability.logging import captured
from agentstage.observability.run_metrics import RunMetrics, standard
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
        self.failures = 0
        self.keeper = SpanKeeper(store) if tracing.enabled and tracing.store else None
        self.resource = resource(tracing)
        target = otlp_target(tracing) if tracing.enabled else None
        self.otlp = OtlpExport(*target, self.resource) if target else None
        self.traces = (
            RunTraces(self._emit, capture_content=tracing.capture_content,
                      max_attribute_chars=tracing.max_attribute_chars, provider_type=provider_type)
            if tracing.enabled else None
        )  # fmt: skip
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
        """Count, trace and log committed events. Pure bookkeeping in memory: spans go to the
        keeper's queue and the exporter's thread, log lines to the log writer's thread."""
        for part in (self.run_metrics, self.traces, self.run_log):
            if part is None:
                continue
            try:
                if isinstance(part, RunTraces):
                    part.handle(events)
                else:
                    part.deliver(events)
            except Exception:  # a bug here loses observation of these events, never a run
                self.failures += 1
                if self.failures == 1:
                    log.exception("observing events failed; observation of some runs is incomplete")

    def _emit(self, span: SpanRecord) -> None:
        if self.keeper is not None:
            self.keeper.add(span)
        if self.otlp is not None:
            self.otlp.export(span)

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
