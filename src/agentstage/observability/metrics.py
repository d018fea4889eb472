"""Metrics: one process-wide set, served as Prometheus text at ``/metrics`` (and over OTLP when
configured), correct under ``agent serve --workers N``.

A small API by name — :func:`counter`, :func:`histogram`, :func:`gauge` — is all any part of the
product needs (the event-stream sink below, the doors, the embedded model host). Asking twice for
the same name returns the same metric. Under several worker processes, ``agent serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start (:func:`prepare_directory`);
each process then writes its values to memory-mapped files there and any worker's ``/metrics``
adds them all up (prometheus_client's multiprocess mode), so one scrape sees every worker.
"""

from __future__ import annotations

import contextlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
GaugeMode = Literal["livesum", "liveall", "max", "min", "sum", "mostrecent", "livemostrecent"]

# Buckets: seconds for latencies; the GenAI semantic conventions' advice for the gen_ai metrics.
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
GENAI_SECONDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
GENAI_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

_lock = threading.Lock()
_metrics: dict[str, _Metric] = {}
_registry: Any = None  # the single-process CollectorRegistry, made on first use
_meter: Any = None  # an OpenTelemetry Meter when OTLP metrics are on


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def _otel_key(label: str) -> str:
    if label.startswith("gen_ai_"):
        return "gen_ai." + label[len("gen_ai_") :].replace("_", ".")
    return "error.type" if label == "error_type" else label


class _Metric(ABC):
    kind = ""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], otel_name: str, unit: str):
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.otel_name = otel_name
        self.unit = unit
        self._otel_keys = tuple(_otel_key(label) for label in self.labels)
        self.prom: Any = None
        self.otel: Any = None
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, labels: dict[str, str]) -> Any:
        """The labelled child, looked up once per label values (prometheus_client's own look-up
        validates and locks on every call)."""
        if not self.labels:
            return self.prom
        seen = (*labels, *labels.values())  # as the caller named them: a call site names them alike
        child = self._children.get(seen)
        if child is None:
            key = tuple(str(labels[name]) for name in self.labels)
            child = self._children[seen] = self.prom.labels(*key)
        return child

    def _attributes(self, labels: dict[str, str]) -> dict[str, str]:
        return {key: str(labels[label]) for key, label in zip(self._otel_keys, self.labels, strict=True)}

    def bound(self, **labels: str) -> Bound:
        """This metric with its label values given once: a caller that records the same labels
        again and again keeps it and skips the look-up (and the OpenTelemetry attributes are made
        once too)."""
        return Bound(self, labels)

    @abstractmethod
    def _attach(self, meter: Any) -> None:
        """Create this metric's OpenTelemetry instrument on ``meter``."""


class Bound:
    """A metric with its labels bound: ``inc`` for counters, ``observe`` for histograms."""

    __slots__ = ("_child", "attributes", "labels", "metric")

    def __init__(self, metric: _Metric, labels: dict[str, str]):
        self.metric = metric
        self.labels = labels
        self.attributes = metric._attributes(labels) if metric.labels else {}
        self._child: Any = None  # made on first use: a series appears once it has a value, as before

    def inc(self, amount: float = 1.0) -> None:
        child = self._child
        if child is None:
            child = self._child = self.metric._child(self.labels)
        child.inc(amount)
        otel = self.metric.otel
        if otel is not None:
            otel.add(amount, self.attributes)

    def observe(self, value: float) -> None:
        child = self._child
        if child is None:
            child = self._child = self.metric._child(self.labels)
        child.observe(value)
        otel = self.metric.otel
        if otel is not None:
            otel.record(value, self.attributes)


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(amount)
        if self.otel is not None:
            self.otel.add(amount, self._attributes(labels))

    def _attach(self, meter: Any) -> None:
        self.otel = meter.create_counter(self.otel_name, unit=self.unit, description=self.documentation)


class Histogram(_Metric):
    kind = "histogram"

    def observe(self, value: float, **labels: str) -> None:
        self._child(labels).observe(value)
        if self.otel is not None:
            self.otel.record(value, self._attributes(labels))

    def _attach(self, meter: Any) -> None:
        self.otel = meter.create_histogram(self.otel_name, unit=self.unit, description=self.documentation)


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        self._child(labels).set(value)
        if self.otel is not None:
            self.otel.set(value, self._attributes(labels))

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        child = self._child(labels)
        child.inc(amount)
        if self.otel is not None:
            self.otel.set(_current(child), self._attributes(labels))

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def _attach(self, meter: Any) -> None:
        self.otel = meter.create_gauge(self.otel_name, unit=self.unit, description=self.documentation)


def _current(child: Any) -> float:
    value: float = child._value.get()  # prometheus_client keeps no public getter for one child
    return value


def _default_otel_name(name: str) -> str:
    return name.removesuffix("_total").replace("_", ".")


def _get(cls: type[_Metric], name: str, documentation: str, labels: Sequence[str], otel_name: str | None,
         unit: str, build: Any) -> Any:  # fmt: skip
    with _lock:
        found = _metrics.get(name)
        if found is not None:
            if not isinstance(found, cls) or found.labels != tuple(labels):
                raise ValueError(f"metric {name!r} exists as a {found.kind} with labels {found.labels}")
            return found
        metric = cls(name, documentation, labels, otel_name or _default_otel_name(name), unit)
        metric.prom = build(registry=_prometheus_registry())
        _metrics[name] = metric
        meter = _meter
    if meter is not None:  # outside the lock: OpenTelemetry may log, and logging may count drops here
        metric._attach(meter)
    return metric


def counter(
    name: str, documentation: str, labels: Sequence[str] = (), *, otel_name: str | None = None, unit: str = ""
) -> Counter:
    """A counter (name it ``…_total``); the same object for the same name, in any module."""
    from prometheus_client import Counter as PromCounter

    def build(registry: Any) -> Any:
        return PromCounter(name, documentation, labels, registry=registry)

    found: Counter = _get(Counter, name, documentation, labels, otel_name, unit, build)
    return found


def histogram(
    name: str,
    documentation: str,
    labels: Sequence[str] = (),
    *,
    buckets: Iterable[float] = SECONDS,
    otel_name: str | None = None,
    unit: str = "",
) -> Histogram:
    from prometheus_client import Histogram as PromHistogram

    def build(registry: Any) -> Any:
        return PromHistogram(name, documentation, labels, registry=registry, buckets=tuple(buckets))

    found: Histogram = _get(Histogram, name, documentation, labels, otel_name, unit, build)
    return found


def gauge(
    name: str,
    documentation: str,
    labels: Sequence[str] = (),
    *,
    mode: GaugeMode = "livesum",
    otel_name: str | None = None,
    unit: str = "",
) -> Gauge:
    """A gauge; ``mode`` says how several worker processes' values combine (``livesum``: the sum
    over live processes; ``mostrecent``: the latest set anywhere; ``max``…)."""
    from prometheus_client import Gauge as PromGauge

    def build(registry: Any) -> Any:
        return PromGauge(name, documentation, labels, registry=registry, multiprocess_mode=mode)

    found: Gauge = _get(Gauge, name, documentation, labels, otel_name, unit, build)
    return found


def _prometheus_registry() -> Any:
    """Where metrics register: a private registry in one process; none under multiprocess mode
    (values live in files and the exposition reads them all)."""
    global _registry
    if multiprocess():
        return None
    if _registry is None:
        from prometheus_client import CollectorRegistry

        _registry = CollectorRegistry(auto_describe=True)
    return _registry


def attach_meter(meter: Any) -> None:
    """Also record every metric, now and later, on an OpenTelemetry meter (OTLP export)."""
    global _meter
    with _lock:
        _meter = meter
        known = list(_metrics.values())
    for metric in known:
        metric._attach(meter)


def detach_meter() -> None:
    global _meter
    with _lock:
        _meter = None
        for metric in _metrics.values():
            metric.otel = None


def dropped(what: str, count: int = 1) -> None:
    """Count observation data dropped to keep runs fast (``spans``, ``log_lines``)."""
    counter(
        "agent_observability_dropped_total",
        "Spans and log lines dropped because their writer could not keep up.",
        ("what",),
    ).inc(count, what=what)


# exposition ------------------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every metric of every worker process, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = _prometheus_registry()
    body = generate_latest(registry) + _derived(registry)
    return body, CONTENT_TYPE_LATEST


def _derived(registry: Any) -> bytes:
    """``agent_cache_hit_ratio``: cached input tokens over input tokens per provider and model,
    computed from the (already aggregated) token counters at scrape time."""
    tokens: dict[tuple[str, str], dict[str, float]] = {}
    for family in registry.collect():
        if family.name != "agent_tokens_used":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels.get("provider", ""), sample.labels.get("model", ""))
                tokens.setdefault(key, {})[sample.labels.get("type", "")] = sample.value
    lines = [
        "# HELP agent_cache_hit_ratio Share of input tokens served from a provider's prompt cache.",
        "# TYPE agent_cache_hit_ratio gauge",
    ]
    for (provider, model), by_type in sorted(tokens.items()):
        total = by_type.get("input", 0.0)
        ratio = by_type.get("cached_input", 0.0) / total if total else 0.0
        lines.append(
            f'agent_cache_hit_ratio{{model="{_escape(model)}",provider="{_escape(provider)}"}} {ratio}'
        )
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# worker processes ------------------------------------------------------------------------------


def prepare_directory(path: Path) -> None:
    """Make ``path`` an empty multiprocess directory (old ``*.db`` files would count twice)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        with contextlib.suppress(OSError):
            stale.unlink()


def forget_dead_processes() -> None:
    """Drop the live gauges of worker processes that are gone (a worker that crashed cannot)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    from prometheus_client import multiprocess as mp

    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            mp.mark_process_dead(int(pid), directory)  # type: ignore[no-untyped-call]


def process_exiting() -> None:
    """This worker stops: its live gauges stop counting (its counters stay in the totals)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
