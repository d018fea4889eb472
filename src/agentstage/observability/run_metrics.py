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
        kind = self.provider_type(provider)
        for token_type, count in (("input", usage.input_tokens), ("output", usage.output_tokens),
                                  ("cached_input", usage.cached_input_tokens)):  # fmt: skip
            if count:
                self.m.tokens.inc(count, provider=provider, model=model, type=token_type)
        for token_type, count in (("input", usage.input_tokens), ("output", usage.output_tokens)):
            self.m.token_usage.observe(
                count, gen_ai_operation_name="chat", gen_ai_provider_name=kind,
                gen_ai_request_model=request_model, gen_ai_response_model=model, gen_ai_token_type=token_type,
            )  # fmt: skip
        seconds = payload.latency_ms / 1000
        self.m.llm_latency.observe(seconds, provider=provider, model=model)
        if usage.output_tokens and seconds > 0:
            self.m.output_rate.observe(usage.output_tokens / seconds, provider=provider, model=model)
        self.m.operation_duration.observe(
            seconds, gen_ai_operation_name="chat", gen_ai_provider_name=kind, gen_ai_request_model=request_model,
            error_type="",
        )  # fmt: skip

    def _ended(self, event: RunEvent, payload: RunCompleted | RunFailed | RunCancelled) -> None:
        run = self._runs.pop(event.run_id, None)
        if run is None:
            return
        status = payload.type.split(".", 1)[1]
        end = ns(event.ts)
        self.m.requests.inc(door=run.door, status=status)
        self.m.request_duration.observe((end - run.queued_ns) / 1e9, door=run.door, status=status)
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

    def _forget(self, _run_id: str, run: _Run) -> None:
        if run.started:  # a run whose end never came here: stop counting it as active
            self.m.active.dec()
