"""The run metrics, counted from the committed event stream by :class:`RunMetrics` (an event sink).

Counting is a few dictionary look-ups per event, so the sink works inside ``deliver`` and never
queues or drops: the numbers on ``/metrics`` are exact for every run this process executed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from agentstage.core.events import (
    ModelRequested,
    ModelResponded,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunQueued,
    RunStarted,
    ToolResulted,
)
from agentstage.observability import metrics as m
from agentstage.observability.tracing import ns


@dataclass(frozen=True)
class Standard:
    """The metrics every agentstage process exposes."""

    requests: m.Counter
    request_duration: m.Histogram
    active: m.Gauge
    tokens: m.Counter
    tool_calls: m.Counter
    errors: m.Counter
    llm_latency: m.Histogram
    token_usage: m.Histogram
    operation_duration: m.Histogram
    door_requests: m.Counter
    door_duration: m.Histogram
    output_rate: m.Histogram


# Output tokens per second of one model call: a CPU-bound embedded model makes tens, a remote one hundreds.
TOKENS_PER_SECOND = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


def model_host_restarted() -> None:
    """Count a restart of ``agent serve``'s embedded model host (called by its supervisor)."""
    m.counter(
        "agent_model_host_restarts_total", "Restarts of the embedded model host after it exited.",
        otel_name="agent.model_host.restarts",
    ).inc()  # fmt: skip


def standard() -> Standard:
    return Standard(
        requests=m.counter(
            "agent_requests_total", "Agent runs that ended, by the door they came through and how they ended.",
            ("door", "status"), otel_name="agent.requests",
        ),
        request_duration=m.histogram(
            "agent_request_duration_seconds", "Agent run duration, from queued to its end.",
            ("door", "status"), otel_name="agent.request.duration", unit="s",
        ),
        active=m.gauge(
            "agent_active_executions", "Agent runs executing now (started, not ended), all workers.",
            mode="livesum", otel_name="agent.active_executions",
        ),
        tokens=m.counter(
            "agent_tokens_used_total", "Tokens spent, by provider, model and type (input, output, cached_input).",
            ("provider", "model", "type"), otel_name="agent.tokens.used", unit="{token}",
        ),
        tool_calls=m.counter(
            "agent_tool_calls_total", "Tool calls by tool (name:version) and status (ok, error).",
            ("tool", "status"), otel_name="agent.tool.calls",
        ),
        errors=m.counter(
            "agent_errors_total", "Errors by code and kind (run: a failed run; tool; model: a retried or "
            "fallen-back model call).", ("code", "kind"), otel_name="agent.errors",
        ),
        llm_latency=m.histogram(
            "agent_llm_latency_seconds", "Model call latency (request to final response), by provider and model.",
            ("provider", "model"), otel_name="agent.llm.latency", unit="s",
        ),
        token_usage=m.histogram(
            "gen_ai_client_token_usage", "GenAI client token usage per model call (OpenTelemetry GenAI metric).",
            ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model",
             "gen_ai_token_type"),
            buckets=m.GENAI_TOKENS, otel_name="gen_ai.client.token.usage", unit="{token}",
        ),
        operation_duration=m.histogram(
            "gen_ai_client_operation_duration_seconds", "GenAI client operation duration (OpenTelemetry "
            "GenAI metric).", ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
                               "error_type"),
            buckets=m.GENAI_SECONDS, otel_name="gen_ai.client.operation.duration", unit="s",
        ),
        door_requests=m.counter(
            "agent_door_requests_total", "Requests the doors served (HTTP, WebSocket, gRPC), by door, method and status.",
            ("door", "method", "status"), otel_name="agent.door.requests",
        ),
        door_duration=m.histogram(
            "agent_door_request_duration_seconds", "How long the doors took to serve a request (streams: until closed).",
            ("door", "method"), otel_name="agent.door.request.duration", unit="s",
        ),
        output_rate=m.histogram(
            "agent_llm_output_tokens_per_second", "Output tokens per second of each model call, by provider "
            "and model (the embedded model's speed under provider 'local').", ("provider", "model"),
            buckets=TOKENS_PER_SECOND, otel_name="agent.llm.output_tokens_per_second", unit="{token}/s",
        ),
    )  # fmt: skip


_MAX_BOUND = 1000  # label combinations whose bound metrics are kept (models; doors and statuses)


@dataclass(frozen=True, slots=True)
class _ModelMetrics:
    """What one model's answers count, labels bound (see :meth:`RunMetrics._model_metrics`)."""

    input_tokens: m.Bound
    output_tokens: m.Bound
    cached_input_tokens: m.Bound
    input_usage: m.Bound
    output_usage: m.Bound
    latency: m.Bound
    output_rate: m.Bound
    duration: m.Bound


@dataclass
class _Run:
    door: str
    queued_ns: int
    started: bool = False
    calls: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # call id -> start, provider, model


class RunMetrics:
    """Counts runs, tokens, tool calls, errors and latencies from committed events."""

    def __init__(
        self, standard: Standard, provider_type: Callable[[str], str] | None = None, max_runs: int = 10_000
    ):
        self.m = standard
        self.provider_type = provider_type or (lambda name: name)
        self.max_runs = max_runs
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._bound_models: dict[tuple[str, str, str], _ModelMetrics] = {}
        self._bound_runs: dict[tuple[str, str], tuple[m.Bound, m.Bound]] = {}

    def deliver(self, events: Sequence[RunEvent]) -> None:
        counts = self._counts
        for event in events:
            count = counts.get(event.type)  # most events (message deltas, steps) count for nothing
            if count is not None:
                count(event, event.payload)

    @cached_property
    def _counts(self) -> dict[str, Callable[[RunEvent, Any], None]]:
        """What each counted event type does, found by the event's ``type``: a ``match`` on payload
        classes costs an ``isinstance`` per case (pydantic makes those slow), for every event."""
        return {
            "run.queued": self._queued,
            "run.started": self._started,
            "model.request": self._requested,
            "model.response": lambda event, payload: self._responded(self._runs.get(event.run_id), payload),
            "model.retry": lambda _e, payload: self.m.errors.inc(code=payload.error.code, kind="model"),
            "model.fallback": lambda _e, payload: self.m.errors.inc(code=payload.reason.code, kind="model"),
            "tool.result": self._tool_result,
            "run.completed": self._ended,
            "run.failed": self._ended,
            "run.cancelled": self._ended,
        }

    def _queued(self, event: RunEvent, payload: RunQueued) -> None:
        self._runs[event.run_id] = _Run(payload.door or "unknown", ns(event.ts))
        while len(self._runs) > self.max_runs:
            self._forget(*self._runs.popitem(last=False))

    def _started(self, event: RunEvent, _payload: RunStarted) -> None:
        run = self._runs.get(event.run_id)
        if run is not None and not run.started:
            run.started = True
            self.m.active.inc()

    def _requested(self, event: RunEvent, payload: ModelRequested) -> None:
        run = self._runs.get(event.run_id)
        if run is not None:
            run.calls[payload.call_id] = (ns(event.ts), payload.provider, payload.model)

    def _tool_result(self, _event: RunEvent, payload: ToolResulted) -> None:
        status = "ok" if payload.error is None else "error"
        self.m.tool_calls.inc(tool=payload.tool, status=status)
        if payload.error is not None:
            self.m.errors.inc(code=payload.error.code, kind="tool")

    def _responded(self, run: _Run | None, payload: ModelResponded) -> None:
        provider, model, usage = payload.provider, payload.model, payload.usage
        requested = run.calls.pop(payload.call_id, None) if run is not None else None
        request_model = requested[2] if requested else model
        bound = self._model_metrics(provider, model, request_model)
        if usage.input_tokens:
            bound.input_tokens.inc(usage.input_tokens)
        if usage.output_tokens:
            bound.output_tokens.inc(usage.output_tokens)
        if usage.cached_input_tokens:
            bound.cached_input_tokens.inc(usage.cached_input_tokens)
        bound.input_usage.observe(usage.input_tokens)
        bound.output_usage.observe(usage.output_tokens)
        seconds = payload.latency_ms / 1000
        bound.latency.observe(seconds)
        if usage.output_tokens and seconds > 0:
            bound.output_rate.observe(usage.output_tokens / seconds)
        bound.duration.observe(seconds)

    def _model_metrics(self, provider: str, model: str, request_model: str) -> _ModelMetrics:
        """The metrics of a model's answers with their labels bound, made once per provider and
        model (a run's calls all look them up)."""
        key = (provider, model, request_model)
        found = self._bound_models.get(key)
        if found is None:
            if len(self._bound_models) >= _MAX_BOUND:
                self._bound_models.clear()
            kind = self.provider_type(provider)
            usage = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": kind,
                     "gen_ai_request_model": request_model, "gen_ai_response_model": model}  # fmt: skip
            found = self._bound_models[key] = _ModelMetrics(
                input_tokens=self.m.tokens.bound(provider=provider, model=model, type="input"),
                output_tokens=self.m.tokens.bound(provider=provider, model=model, type="output"),
                cached_input_tokens=self.m.tokens.bound(provider=provider, model=model, type="cached_input"),
                input_usage=self.m.token_usage.bound(**usage, gen_ai_token_type="input"),
                output_usage=self.m.token_usage.bound(**usage, gen_ai_token_type="output"),
                latency=self.m.llm_latency.bound(provider=provider, model=model),
                output_rate=self.m.output_rate.bound(provider=provider, model=model),
                duration=self.m.operation_duration.bound(
                    gen_ai_operation_name="chat",
                    gen_ai_provider_name=kind,
                    gen_ai_request_model=request_model,
                    error_type="",
                ),
            )
        return found

    def _ended(self, event: RunEvent, payload: RunCompleted | RunFailed | RunCancelled) -> None:
        run = self._runs.pop(event.run_id, None)
        if run is None:
            return
        status = payload.type.split(".", 1)[1]
        end = ns(event.ts)
        requests, duration = self._run_metrics(run.door, status)
        requests.inc()
        duration.observe((end - run.queued_ns) / 1e9)
        code = payload.error.code if isinstance(payload, RunFailed) else "cancelled"
        if isinstance(payload, RunFailed):
            self.m.errors.inc(code=code, kind="run")
        for start, provider, model in run.calls.values():  # model calls the run's end cut short
            self.m.operation_duration.observe(
                (end - start) / 1e9, gen_ai_operation_name="chat", gen_ai_provider_name=self.provider_type(provider),
                gen_ai_request_model=model, error_type=code,
            )  # fmt: skip
        if run.started:
            self.m.active.dec()

    def _run_metrics(self, door: str, status: str) -> tuple[m.Bound, m.Bound]:
        key = (door, status)
        found = self._bound_runs.get(key)
        if found is None:
            if len(self._bound_runs) >= _MAX_BOUND:
                self._bound_runs.clear()
            found = self._bound_runs[key] = (
                self.m.requests.bound(door=door, status=status),
                self.m.request_duration.bound(door=door, status=status),
            )
        return found

    def _forget(self, _run_id: str, run: _Run) -> None:
        if run.started:  # a run whose end never came here: stop counting it as active
            self.m.active.dec()
