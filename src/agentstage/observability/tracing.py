"""A run's trace, derived from its events: OpenTelemetry GenAI spans without touching the core.

:class:`RunTraces` follows the committed event stream (it is fed by an event sink) and turns each
run into a span tree that follows the GenAI semantic conventions::

    invoke_agent {agent}                 one per run, from run.queued to its end
    ├── orchestration.select             admission and preparation: mode, tools, snapshot
    ├── chat {model}                     one per model call (its step)
    │   ├── llm.generate                 the provider's answer, streamed
    │   └── llm.parse                    turning the answer into an action or a plan
    ├── execute_tool {tool}              one per tool call (its step)
    │   ├── tool.validate                checking the arguments   (measured by InstrumentedTool)
    │   └── tool.run                     the tool's work
    └── streaming.aggregate              the answer streamed to the client, chunk by chunk

Span ids are the step span ids the events already carry, so log lines and events point at real
spans; the root's id is derived from the run id, and its parent is the caller's span when the run
continued a caller's trace. Every span is built when it ends and handed to ``emit``. The same
builder serves twice: fed live by the event sink when an OTLP collector is configured (the spans go
to the exporter), and fed a run's stored events when its trace is read (the store keeps no copy
of spans its events can give). Message content is left off spans unless ``capture_content`` is
on, and then it is masked like everything else.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, cast

from agentstage.core.events import (
    MessageDelta,
    ModelFellBack,
    ModelRequested,
    ModelResponded,
    ModelRetried,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunQueued,
    RunStarted,
    StepFinished,
    StepStarted,
    ToolResulted,
)
from agentstage.core.records import SpanRecord
from agentstage.observability.masking import redact
from agentstage.observability.tools import TIMINGS, TimingBook

Emit = Callable[[SpanRecord], None]
ARGUMENT_ERRORS = frozenset({"invalid_tool_arguments"})
_REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def ns(ts: datetime) -> int:
    """Unix nanoseconds of an event's timestamp (exact: no float in between)."""
    return (ts - _EPOCH) // _MICROSECOND * 1000


def root_span_id(run_id: str) -> str:
    """The id of a run's ``invoke_agent`` span: derived, so any process can name it."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


def derived_span_id(run_id: str, key: str) -> str:
    return hashlib.sha256(f"{run_id}/{key}".encode()).hexdigest()[:16]


@dataclass
class _Call:
    call_id: str
    start_ns: int
    provider: str
    model: str
    params: dict[str, Any]
    messages: list[Any]
    end_ns: int | None = None
    first_delta_ns: int | None = None
    response: ModelResponded | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _ToolCall:
    call_id: str
    tool: str
    start_ns: int
    arguments: dict[str, Any]
    end_ns: int | None = None
    result: ToolResulted | None = None


@dataclass
class _Step:
    span_id: str
    step_id: str
    kind: str
    name: str
    start_ns: int
    calls: list[_Call] = field(default_factory=list)
    tools: list[_ToolCall] = field(default_factory=list)


@dataclass
class _Run:
    run_id: str
    trace_id: str
    start_ns: int
    queued: RunQueued
    mode: str
    steps: dict[str, _Step] = field(default_factory=dict)
    loose_calls: dict[str, _Call] = field(default_factory=dict)
    loose_tools: dict[str, _ToolCall] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    provider: str | None = None
    model: str | None = None
    first_delta_ns: int | None = None
    last_delta_ns: int | None = None
    chunks: int = 0
    characters: int = 0

    @property
    def root(self) -> str:
        return root_span_id(self.run_id)


class RunTraces:
    """Builds spans from committed events. ``provider_type`` maps a configured provider name to
    its kind (``openai``, ``anthropic``…), which is what ``gen_ai.provider.name`` means."""

    def __init__(
        self,
        emit: Emit,
        *,
        capture_content: bool = False,
        max_attribute_chars: int = 4096,
        provider_type: Callable[[str], str] | None = None,
        timings: TimingBook = TIMINGS,
        max_runs: int = 10_000,
    ):
        self.emit = emit
        self.capture_content = capture_content
        self.max_chars = max_attribute_chars
        self.provider_type = provider_type or (lambda name: name)
        self.timings = timings
        self.max_runs = max_runs
        self._runs: OrderedDict[str, _Run] = OrderedDict()

    def handle(self, events: Sequence[RunEvent]) -> None:
        for event in events:
            self.handle_one(event)

    def handle_one(self, event: RunEvent) -> None:
        payload = event.payload
        if event.type == "run.queued":
            self._queued(event, cast(RunQueued, payload))
            return
        run = self._runs.get(event.run_id)
        if run is None:
            return  # its beginning was never seen here (dropped, or another process's run)
        handler = self._handlers.get(event.type)
        if handler is not None:
            handler(run, event, payload, ns(event.ts))

    @cached_property
    def _handlers(self) -> dict[str, Callable[[_Run, RunEvent, Any, int], None]]:
        """The handler of each event type, found by the event's ``type``: a ``match`` on payload
        classes costs an ``isinstance`` per case (pydantic makes those slow), for every event."""
        return {
            "message.delta": lambda run, _e, payload, at: self._delta(run, payload, at),
            "run.started": self._started,
            "plan.created": lambda run, _e, payload, at: run.notes.append(
                _note("plan.created", at, {"agentstage.plan.steps": len(payload.steps)})
            ),
            "step.started": self._step_started,
            "model.request": self._requested,
            "model.retry": self._model_notice,
            "model.fallback": self._model_notice,
            "model.response": self._responded,
            "tool.call": lambda run, event, payload, at: self._place(
                run, event.span_id, _ToolCall(payload.call_id, payload.tool, at, payload.arguments), run.loose_tools
            ),
            "tool.result": lambda run, event, payload, at: self._tool_result(run, event.span_id, payload, at),
            "step.finished": self._step_finished,
            "run.completed": lambda run, _e, payload, at: self._finish(run, payload, at),
            "run.failed": lambda run, _e, payload, at: self._finish(run, payload, at),
            "run.cancelled": lambda run, _e, payload, at: self._finish(run, payload, at),
        }  # fmt: skip

    def _started(self, run: _Run, _event: RunEvent, payload: RunStarted, at: int) -> None:
        run.mode = payload.mode
        self._span(run, "orchestration.select", derived_span_id(run.run_id, "select"), run.root,
                   run.start_ns, at, {"agentstage.mode": payload.mode,
                                      "agentstage.mode_reason": payload.mode_reason,
                                      "agentstage.prompt_template": payload.prompt_template})  # fmt: skip

    def _step_started(self, run: _Run, event: RunEvent, payload: StepStarted, at: int) -> None:
        run.steps[event.span_id or payload.step_id] = _Step(
            event.span_id or derived_span_id(run.run_id, f"step/{payload.step_id}"),
            payload.step_id, payload.kind, payload.name, at,
        )  # fmt: skip

    def _requested(self, run: _Run, event: RunEvent, payload: ModelRequested, at: int) -> None:
        started = _Call(
            payload.call_id, at, payload.provider, payload.model, payload.params, payload.messages
        )
        run.provider, run.model = run.provider or payload.provider, run.model or payload.model
        self._place(run, event.span_id, started, run.loose_calls)

    def _model_notice(
        self, run: _Run, event: RunEvent, payload: ModelRetried | ModelFellBack, at: int
    ) -> None:
        call = self._find_call(run, event.span_id, payload.call_id)
        if call is not None:
            call.notes.append(_note(payload.type, at, _notice(payload)))

    def _responded(self, run: _Run, event: RunEvent, payload: ModelResponded, at: int) -> None:
        call = self._find_call(run, event.span_id, payload.call_id)
        if call is not None:
            call.end_ns, call.response = at, payload
            if payload.call_id in run.loose_calls:
                self._chat(run, run.loose_calls.pop(payload.call_id), run.root, None, None, None)

    def _step_finished(self, run: _Run, event: RunEvent, payload: StepFinished, at: int) -> None:
        step = run.steps.pop(event.span_id or payload.step_id, None)
        if step is not None:
            code = payload.error.code if payload.error else None
            self._step(run, step, at, code, payload.error.message if payload.error else None)

    # building -------------------------------------------------------------------------------------

    def _queued(self, event: RunEvent, payload: RunQueued) -> None:
        self._runs[event.run_id] = _Run(
            event.run_id, event.trace_id or hashlib.sha256(event.run_id.encode()).hexdigest()[16:48], ns(event.ts),
            payload, payload.mode,
        )  # fmt: skip
        while len(self._runs) > self.max_runs:
            self._runs.popitem(last=False)

    @staticmethod
    def _place(run: _Run, span_id: str | None, item: Any, loose: dict[str, Any]) -> None:
        step = run.steps.get(span_id) if span_id else None
        if step is None:
            loose[item.call_id] = item
        elif isinstance(item, _Call):
            step.calls.append(item)
        else:
            step.tools.append(item)

    @staticmethod
    def _find_call(run: _Run, span_id: str | None, call_id: str) -> _Call | None:
        step = run.steps.get(span_id) if span_id else None
        for call in step.calls if step else ():
            if call.call_id == call_id:
                return call
        return run.loose_calls.get(call_id)

    def _delta(self, run: _Run, payload: MessageDelta, at: int) -> None:
        run.first_delta_ns = run.first_delta_ns or at
        run.last_delta_ns = at
        run.chunks += 1
        run.characters += len(payload.text)
        calls = [call for step in run.steps.values() for call in step.calls]
        for call in [*calls, *run.loose_calls.values()]:
            if call.call_id == payload.call_id and call.first_delta_ns is None:
                call.first_delta_ns = at

    def _tool_result(self, run: _Run, span_id: str | None, payload: ToolResulted, at: int) -> None:
        step = run.steps.get(span_id) if span_id else None
        for tool in step.tools if step else ():
            if tool.call_id == payload.call_id:
                tool.end_ns, tool.result = at, payload
                return
        loose = run.loose_tools.pop(payload.call_id, None)
        if loose is not None:
            loose.end_ns, loose.result = at, payload
            self._tool(run, loose, run.root, None, None, None)

    def _step(self, run: _Run, step: _Step, end: int, code: str | None, message: str | None) -> None:
        """A step with one model call is that call's ``chat`` span; with one tool call, that
        call's ``execute_tool`` span; anything else is a ``step`` span with them as children."""
        extra = {"agentstage.step_id": step.step_id, "agentstage.step.kind": step.kind,
                 "agentstage.step.name": step.name}  # fmt: skip
        if len(step.calls) == 1 and not step.tools:
            self._chat(run, step.calls[0], run.root, (step.span_id, step.start_ns, end), code, message, extra)
        elif len(step.tools) == 1 and not step.calls:
            self._tool(run, step.tools[0], run.root, (step.span_id, step.start_ns, end), code, message, extra)
        else:
            self._span(run, f"step {step.name}", step.span_id, run.root, step.start_ns, end, extra,
                       error=(code, message) if code else None)  # fmt: skip
            for call in step.calls:
                self._chat(run, call, step.span_id, None, None, None)
            for tool in step.tools:
                self._tool(run, tool, step.span_id, None, None, None)

    def _chat(
        self,
        run: _Run,
        call: _Call,
        parent: str,
        frame: tuple[str, int, int] | None,
        code: str | None,
        message: str | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        response = call.response
        end = call.end_ns or (frame[2] if frame else call.start_ns)
        span_id, start, stop = frame or (derived_span_id(run.run_id, call.call_id), call.start_ns, end)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider_type(call.provider),
            "gen_ai.request.model": call.model,
            "agentstage.provider": call.provider,
            "agentstage.call_id": call.call_id,
            **{key: call.params[name] for name, key in _REQUEST_PARAMS.items() if _scalar(call.params.get(name))},
            **(extra or {}),
        }  # fmt: skip
        if run.queued.conversation_id:
            attributes["gen_ai.conversation.id"] = run.queued.conversation_id
        if response is not None:
            attributes |= {
                "gen_ai.response.model": response.model,
                "gen_ai.response.finish_reasons": [response.finish_reason],
                "gen_ai.usage.input_tokens": response.usage.input_tokens,
                "gen_ai.usage.output_tokens": response.usage.output_tokens,
                "agentstage.latency_ms": response.latency_ms,
            }
            if response.usage.cached_input_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = response.usage.cached_input_tokens
        if call.first_delta_ns is not None:
            attributes["agentstage.time_to_first_chunk_ms"] = round(
                (call.first_delta_ns - call.start_ns) / 1e6, 3
            )
        if self.capture_content:
            attributes["gen_ai.input.messages"] = self._text([_message(m) for m in call.messages])
            if response is not None:
                attributes["gen_ai.output.messages"] = self._text([_message(response.message)])
        failed = code or (None if response is not None else "incomplete")
        error = (failed, message) if failed else None
        self._span(run, f"chat {call.model}", span_id, parent, start, stop, attributes, error=error,
                   kind="client", notes=call.notes)  # fmt: skip
        if frame is None:
            return
        generated = call.end_ns or stop
        self._span(run, "llm.generate", derived_span_id(run.run_id, f"{call.call_id}/generate"), span_id,
                   call.start_ns, generated, {"gen_ai.request.model": call.model},
                   error=None if response is not None else error)  # fmt: skip
        if response is not None:
            self._span(run, "llm.parse", derived_span_id(run.run_id, f"{call.call_id}/parse"), span_id,
                       generated, stop, {"gen_ai.response.finish_reasons": [response.finish_reason]},
                       error=error)  # fmt: skip

    def _tool(
        self,
        run: _Run,
        tool: _ToolCall,
        parent: str,
        frame: tuple[str, int, int] | None,
        code: str | None,
        message: str | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        result = tool.result
        end = tool.end_ns or (frame[2] if frame else tool.start_ns)
        span_id, start, stop = frame or (derived_span_id(run.run_id, tool.call_id), tool.start_ns, end)
        name, _, version = tool.tool.partition(":")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": tool.call_id,
            "gen_ai.tool.type": "function",
            "agentstage.tool.version": version,
            **(extra or {}),
        }
        if result is not None:
            attributes["agentstage.latency_ms"] = result.latency_ms
            code = code or (result.error.code if result.error else None)
            message = message or (result.error.message if result.error else None)
        else:
            code = code or "incomplete"
        if self.capture_content:
            attributes["gen_ai.tool.call.arguments"] = self._text(tool.arguments)
            if result is not None and result.error is None:
                attributes["gen_ai.tool.call.result"] = self._text(result.output)
        self._span(run, f"execute_tool {name}", span_id, parent, start, stop, attributes,
                   error=(code, message) if code else None)  # fmt: skip
        self._tool_children(run, tool, span_id, code, message)

    def _tool_children(
        self, run: _Run, tool: _ToolCall, parent: str, code: str | None, message: str | None
    ) -> None:
        timing = self.timings.take(run.run_id, tool.call_id)
        validate_id = derived_span_id(run.run_id, f"{tool.call_id}/validate")
        if timing is None:
            if code in ARGUMENT_ERRORS and tool.end_ns is not None:  # validation was all that ran
                self._span(run, "tool.validate", validate_id, parent, tool.start_ns, tool.end_ns, {},
                           error=(code, message))  # fmt: skip
            return
        self._span(
            run, "tool.validate", validate_id, parent, timing.validate_start_ns, timing.validate_end_ns, {}
        )
        self._span(run, "tool.run", derived_span_id(run.run_id, f"{tool.call_id}/run"), parent,
                   timing.run_start_ns, timing.run_end_ns, {},
                   error=(code, message) if code and code not in ARGUMENT_ERRORS else None)  # fmt: skip

    def _finish(self, run: _Run, payload: RunCompleted | RunFailed | RunCancelled, at: int) -> None:
        self._runs.pop(run.run_id, None)
        code, message = None, None
        if isinstance(payload, RunFailed):
            code, message = payload.error.code, payload.error.message
        for step in list(run.steps.values()):
            self._step(run, step, at, code or "incomplete", message or "the run ended during this step")
        for call in run.loose_calls.values():
            self._chat(run, call, run.root, None, code or "incomplete", message)
        for tool in run.loose_tools.values():
            self._tool(run, tool, run.root, None, code or "incomplete", message)
        if run.chunks:
            self._span(run, "streaming.aggregate", derived_span_id(run.run_id, "stream"), run.root,
                       run.first_delta_ns or at, run.last_delta_ns or at,
                       {"agentstage.stream.chunks": run.chunks,
                        "agentstage.stream.characters": run.characters})  # fmt: skip
        self._root(run, payload, at, code, message)

    def _root(
        self, run: _Run, payload: RunCompleted | RunFailed | RunCancelled, at: int, code: str | None,
        message: str | None,
    ) -> None:  # fmt: skip
        queued = run.queued
        usage = payload.usage
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": run.mode,
            "agentstage.mode": run.mode,
            "agentstage.profile": queued.profile,
            "agentstage.status": payload.type.split(".", 1)[1],
            "agentstage.door": queued.door or "unknown",
            "gen_ai.usage.input_tokens": int(usage.get("input_tokens", 0)),
            "gen_ai.usage.output_tokens": int(usage.get("output_tokens", 0)),
            "agentstage.cost_usd": payload.cost,
        }
        if run.provider is not None:
            attributes["gen_ai.provider.name"] = self.provider_type(run.provider)
            attributes["gen_ai.request.model"] = run.model or ""
        if queued.conversation_id:
            attributes["gen_ai.conversation.id"] = queued.conversation_id
        if queued.correlation_id:
            attributes["agentstage.correlation_id"] = queued.correlation_id
        if isinstance(payload, RunCancelled):
            attributes["agentstage.cancel_reason"] = payload.reason
        if self.capture_content:
            attributes["agentstage.input"] = self._text(queued.input)
            if isinstance(payload, RunCompleted):
                attributes["agentstage.output"] = self._text(payload.output)
        self._span(run, f"invoke_agent {run.mode}", run.root, queued.parent_span_id, run.start_ns, at,
                   attributes, error=(code, message) if code else None, notes=run.notes)  # fmt: skip

    def _span(
        self,
        run: _Run,
        name: str,
        span_id: str,
        parent: str | None,
        start: int,
        end: int,
        attributes: dict[str, Any],
        *,
        error: tuple[str | None, str | None] | None = None,
        kind: str = "internal",
        notes: list[dict[str, Any]] | None = None,
    ) -> None:
        attributes["agentstage.run_id"] = run.run_id
        status, status_message = "unset", None
        if error is not None and error[0]:
            attributes["error.type"] = error[0]
            status, status_message = "error", self._text(error[1] or error[0])
        self.emit(
            SpanRecord(
                trace_id=run.trace_id, span_id=span_id, name=name, start_ns=start, end_ns=max(end, start),
                parent_span_id=parent, run_id=run.run_id, kind=kind, status=status,
                status_message=status_message, attributes=attributes, events=notes or [],
            )
        )  # fmt: skip

    def _text(self, value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        text = redact(text)
        return text if len(text) <= self.max_chars else text[: self.max_chars - 1] + "…"


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) and value is not None


def _note(name: str, at: int, attributes: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "time_ns": at, "attributes": attributes}


def _notice(payload: ModelRetried | ModelFellBack) -> dict[str, Any]:
    if isinstance(payload, ModelRetried):
        return {"agentstage.provider": payload.provider, "agentstage.attempt": payload.attempt,
                "error.type": payload.error.code, "agentstage.delay_s": payload.delay}  # fmt: skip
    return {"agentstage.from_provider": payload.from_provider, "agentstage.to_provider": payload.to_provider,
            "error.type": payload.reason.code}  # fmt: skip


def _message(message: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        body["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls
        ]
    return body
