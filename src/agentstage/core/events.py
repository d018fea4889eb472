"""The run's event model: the one JSON shape every door streams and the store keeps.

Orchestrators yield :class:`EventDraft` objects (a type, a typed payload and a span); the run
service stamps them with ``run_id``, a gap-free ``seq`` and ``ts`` to make :class:`RunEvent`.
Each payload class below is the contract for the ``data`` of one event type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from agentstage.core.messages import Message, ToolCall, Usage

EventType = Literal[
    "run.queued",
    "run.started",
    "plan.created",
    "step.started",
    "step.finished",
    "model.request",
    "message.delta",
    "model.response",
    "model.retry",
    "model.fallback",
    "tool.call",
    "tool.result",
    "run.completed",
    "run.failed",
    "run.cancelled",
]

TERMINAL_EVENT_TYPES: frozenset[str] = frozenset({"run.completed", "run.failed", "run.cancelled"})
StepKind = Literal["plan", "llm", "tool", "synthesize"]


class ErrorInfo(BaseModel):
    code: str
    message: str


class Payload(BaseModel):
    """Base of event payloads; ``event_type`` names the event the payload belongs to."""

    model_config = ConfigDict(extra="forbid")
    event_type: str = Field(default="", exclude=True)


class RunQueued(Payload):
    event_type: str = Field(default="run.queued", exclude=True)
    input: str
    mode: str
    profile: str
    options: dict[str, Any] = Field(default_factory=dict)
    conversation_id: str | None = None
    correlation_id: str | None = None


class RunStarted(Payload):
    event_type: str = Field(default="run.started", exclude=True)
    mode: str
    mode_reason: str
    profile: str
    prompt_template: str
    snapshot_hash: str | None = None
    trace_id: str | None = None


class PlanStep(BaseModel):
    id: int
    description: str
    tool: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)

    @property
    def kind(self) -> Literal["tool", "model"]:
        return "tool" if self.tool else "model"


class PlanCreated(Payload):
    event_type: str = Field(default="plan.created", exclude=True)
    steps: list[PlanStep]


class StepStarted(Payload):
    event_type: str = Field(default="step.started", exclude=True)
    step_id: str
    kind: StepKind
    name: str


class StepFinished(Payload):
    event_type: str = Field(default="step.finished", exclude=True)
    step_id: str
    kind: StepKind
    name: str
    status: Literal["ok", "failed", "cancelled"]
    error: ErrorInfo | None = None


class ModelRequested(Payload):
    event_type: str = Field(default="model.request", exclude=True)
    call_id: str
    provider: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    response_format: dict[str, Any] | None = None


class MessageDelta(Payload):
    event_type: str = Field(default="message.delta", exclude=True)
    call_id: str
    text: str


class ModelResponded(Payload):
    event_type: str = Field(default="model.response", exclude=True)
    call_id: str
    provider: str
    model: str
    message: Message
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage
    finish_reason: str
    latency_ms: float


class ModelRetried(Payload):
    event_type: str = Field(default="model.retry", exclude=True)
    call_id: str
    provider: str
    attempt: int
    error: ErrorInfo
    delay: float


class ModelFellBack(Payload):
    event_type: str = Field(default="model.fallback", exclude=True)
    call_id: str
    from_provider: str
    to_provider: str
    reason: ErrorInfo


class ToolCalled(Payload):
    event_type: str = Field(default="tool.call", exclude=True)
    call_id: str
    tool: str
    arguments: dict[str, Any]


class ToolResulted(Payload):
    event_type: str = Field(default="tool.result", exclude=True)
    call_id: str
    tool: str
    output: Any = None
    error: ErrorInfo | None = None
    latency_ms: float


class RunCompleted(Payload):
    event_type: str = Field(default="run.completed", exclude=True)
    output: str
    usage: dict[str, int]
    cost: float


class RunFailed(Payload):
    event_type: str = Field(default="run.failed", exclude=True)
    error: ErrorInfo
    usage: dict[str, int]
    cost: float


class RunCancelled(Payload):
    event_type: str = Field(default="run.cancelled", exclude=True)
    reason: str
    partial_output: str
    usage: dict[str, int]
    cost: float


@dataclass(slots=True)
class EventDraft:
    """An event before the run service gives it a place in the run's sequence.

    A plain dataclass, not a model: one is made per streamed token, and its payload was already
    validated by the payload class it came from."""

    type: EventType
    data: dict[str, Any]
    span_id: str | None = None

    @classmethod
    def of(cls, payload: Payload, span_id: str | None = None) -> EventDraft:
        return cls(cast(EventType, payload.event_type), payload.model_dump(mode="json"), span_id)


class RunEvent(BaseModel):
    """One entry of a run's append-only log; ``seq`` starts at 1 and has no gaps."""

    run_id: str
    seq: int
    type: EventType
    ts: datetime
    data: dict[str, Any]
    trace_id: str | None = None
    span_id: str | None = None

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENT_TYPES

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "type": self.type,
            "ts": self.ts.isoformat(),
            "data": self.data,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), separators=(",", ":"), ensure_ascii=False)


def utc_now() -> datetime:
    return datetime.now(UTC)
