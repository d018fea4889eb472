"""What every orchestrator shares: the run's context, model calls and tool calls as events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from agentstage.core.events import (
    ErrorInfo,
    EventDraft,
    MessageDelta,
    ModelFellBack,
    ModelRequested,
    ModelResponded,
    ModelRetried,
    StepFinished,
    StepKind,
    StepStarted,
    ToolCalled,
    ToolResulted,
)
from agentstage.core.ids import new_call_id, new_span_id
from agentstage.core.limits import RunLimits
from agentstage.core.messages import Message, ToolCall, Usage
from agentstage.core.model import (
    FallbackNotice,
    Model,
    ModelRequest,
    ModelResponse,
    RetryNotice,
    TextDelta,
    ToolCallChunk,
)
from agentstage.core.prompts import PromptLibrary
from agentstage.core.tools import ToolContext, ToolOutcome, Toolset
from agentstage.errors import ModelError


@dataclass
class AgentContext:
    """Everything one run's orchestrator needs, and what it accumulates as it goes."""

    run_id: str
    input: str
    model: Model
    tools: Toolset
    prompts: PromptLibrary
    limits: RunLimits = field(default_factory=RunLimits)
    history: list[Message] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    deadline: float | None = None
    usage: Usage = field(default_factory=Usage)
    partial_output: str = ""
    output: str | None = None
    _step_counter: int = 0

    def next_step_id(self) -> str:
        self._step_counter += 1
        return str(self._step_counter)

    def tool_context(self, call_id: str) -> ToolContext:
        return ToolContext(
            run_id=self.run_id, call_id=call_id, cancelled=self.cancelled, deadline=self.deadline
        )


class Orchestrator(Protocol):
    """One mode of running an agent. ``template`` is the prompt it renders first (named in the record)."""

    template: ClassVar[str]

    def run(self, ctx: AgentContext) -> AsyncIterator[EventDraft]: ...


class Step:
    """A step's start and end as events; the span id ties the events inside it together."""

    def __init__(self, ctx: AgentContext, kind: StepKind, name: str, *, step_id: str | None = None):
        self.step_id = step_id or ctx.next_step_id()
        self.kind: StepKind = kind
        self.name = name
        self.span_id = new_span_id()

    def started(self) -> EventDraft:
        payload = StepStarted(step_id=self.step_id, kind=self.kind, name=self.name)
        return EventDraft.of(payload, self.span_id)

    def finished(self, error: ErrorInfo | None = None) -> EventDraft:
        payload = StepFinished(
            step_id=self.step_id,
            kind=self.kind,
            name=self.name,
            status="failed" if error else "ok",
            error=error,
        )
        return EventDraft.of(payload, self.span_id)


class ModelCall:
    """Runs one streaming model call, yielding its events; the response is left in ``response``.

    ``stream_text`` decides whether text deltas are user-visible output (``message.delta``) or an
    internal structured answer (a JSON action) that only appears in ``model.response``.
    """

    def __init__(self, ctx: AgentContext, request: ModelRequest, *, span_id: str, stream_text: bool):
        self.ctx = ctx
        self.request = request
        self.span_id = span_id
        self.stream_text = stream_text
        self.call_id = new_call_id("llm")
        self.response: ModelResponse | None = None

    def _draft(self, payload: Any) -> EventDraft:
        return EventDraft.of(payload, self.span_id)

    async def run(self) -> AsyncIterator[EventDraft]:
        ctx, request = self.ctx, self.request
        request.params = {**ctx.params, **request.params}
        yield self._draft(
            ModelRequested(
                call_id=self.call_id,
                provider=ctx.model.provider,
                model=ctx.model.model_name,
                params=request.params,
                messages=request.messages,
                tools=list(request.tools),
                response_format=request.response_format,
            )
        )
        started = time.perf_counter()
        tool_calls: list[ToolCall] = []
        async for chunk in ctx.model.stream(request):
            if isinstance(chunk, TextDelta):
                if self.stream_text and chunk.text:
                    ctx.partial_output += chunk.text
                    yield self._draft(MessageDelta(call_id=self.call_id, text=chunk.text))
            elif isinstance(chunk, ToolCallChunk):
                tool_calls.append(chunk.tool_call)
            elif isinstance(chunk, RetryNotice):
                yield self._draft(self._retry(chunk))
            elif isinstance(chunk, FallbackNotice):
                yield self._draft(self._fallback(chunk))
            elif isinstance(chunk, ModelResponse):
                self.response = chunk
        response = self._final(tool_calls)
        ctx.usage = ctx.usage + response.usage
        yield self._draft(
            ModelResponded(
                call_id=self.call_id,
                provider=response.provider or ctx.model.provider,
                model=response.model or ctx.model.model_name,
                message=response.message,
                tool_calls=response.message.tool_calls,
                usage=response.usage,
                finish_reason=response.finish_reason,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        )
        ctx.limits.check_tokens(ctx.usage)

    def _final(self, streamed_calls: list[ToolCall]) -> ModelResponse:
        if self.response is None:
            raise ModelError(
                f"{self.ctx.model.provider} ended its stream without a final response",
                code="model_error",
            )
        if streamed_calls and not self.response.message.tool_calls:
            message = self.response.message.model_copy(update={"tool_calls": streamed_calls})
            self.response = self.response.model_copy(update={"message": message})
        return self.response

    def _retry(self, notice: RetryNotice) -> ModelRetried:
        return ModelRetried(
            call_id=self.call_id,
            provider=notice.provider,
            attempt=notice.attempt,
            error=ErrorInfo(code=notice.code, message=notice.message),
            delay=notice.delay,
        )

    def _fallback(self, notice: FallbackNotice) -> ModelFellBack:
        return ModelFellBack(
            call_id=self.call_id,
            from_provider=notice.from_provider,
            to_provider=notice.to_provider,
            reason=ErrorInfo(code=notice.code, message=notice.message),
        )


class ToolRun:
    """Runs one tool call as ``tool.call`` / ``tool.result`` events; the outcome is left in ``outcome``."""

    def __init__(self, ctx: AgentContext, call: ToolCall, *, span_id: str):
        self.ctx = ctx
        self.call = call
        self.span_id = span_id
        self.outcome = ToolOutcome()

    async def run(self) -> AsyncIterator[EventDraft]:
        name = self.ctx.tools.qualified(self.call.name)
        yield EventDraft.of(
            ToolCalled(call_id=self.call.id, tool=name, arguments=self.call.arguments), self.span_id
        )
        self.outcome = await self.ctx.tools.execute(self.call, self.ctx.tool_context(self.call.id))
        yield EventDraft.of(
            ToolResulted(
                call_id=self.call.id,
                tool=name,
                output=self.outcome.output,
                error=self.outcome.error,
                latency_ms=self.outcome.latency_ms,
            ),
            self.span_id,
        )
