"""The run's event model: the one JSON shape every door streams and the store keeps.

Orchestrators yield :class:`EventDraft` objects (a typed payload and a span); the run's recorder
stamps them with ``run_id``, a gap-free ``seq`` and ``ts`` to make :class:`RunEvent`. Each payload
class below is the contract for the ``data`` of one event type and carries that type as a
``Literal``, so :data:`EventPayload` is a discriminated union and readers ``match`` on classes
instead of indexing dictionaries.

The wire shape never mentions the payload class: ``data`` is the payload without its ``type``
(which sits beside it), serialised once when the event is made and reused by every door.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
)

from agentstage.core.messages import Message, ToolCall, Usage
from agentstage.core.model import ToolSpec

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
    """Base of event payloads. ``type`` is the event's type; it is not part of ``data`` on the wire."""

    model_config = ConfigDict(extra="forbid")


class RunQueued(Payload):
    """``door`` names where the run came from (http, grpc, cli, sdk…); ``parent_span_id`` is the
    caller's span when the run continues a caller's trace (W3C ``traceparent``). Both are left out
    of ``data`` when unknown."""

    type: Literal["run.queued"] = Field(default="run.queued", exclude=True)
    input: str
    mode: str
    profile: str
    options: dict[str, Any] = Field(default_factory=dict)
    conversation_id: str | None = None
    correlation_id: str | None = None
    door: str | None = None
    parent_span_id: str | None = None

    @model_serializer(mode="wrap")
    def _without_unknown_origin(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in _OPTIONAL_ORIGIN:
            if data.get(name, "") is None:
                del data[name]
        return data


_OPTIONAL_ORIGIN = ("door", "parent_span_id")


class RunStarted(Payload):
    type: Literal["run.started"] = Field(default="run.started", exclude=True)
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
    type: Literal["plan.created"] = Field(default="plan.created", exclude=True)
    steps: list[PlanStep]


class StepStarted(Payload):
    type: Literal["step.started"] = Field(default="step.started", exclude=True)
    step_id: str
    kind: StepKind
    name: str


class StepFinished(Payload):
    type: Literal["step.finished"] = Field(default="step.finished", exclude=True)
    step_id: str
    kind: StepKind
    name: str
    status: Literal["ok", "failed", "cancelled"]
    error: ErrorInfo | None = None


class ModelRequested(Payload):
    type: Literal["model.request"] = Field(default="model.request", exclude=True)
    call_id: str
    provider: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    response_format: dict[str, Any] | None = None


class MessageDelta(Payload):
    type: Literal["message.delta"] = Field(default="message.delta", exclude=True)
    call_id: str
    text: str


class ModelResponded(Payload):
    type: Literal["model.response"] = Field(default="model.response", exclude=True)
    call_id: str
    provider: str
    model: str
    message: Message
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage
    finish_reason: str
    latency_ms: float


class ModelRetried(Payload):
    type: Literal["model.retry"] = Field(default="model.retry", exclude=True)
    call_id: str
    provider: str
    attempt: int
    error: ErrorInfo
    delay: float


class ModelFellBack(Payload):
    type: Literal["model.fallback"] = Field(default="model.fallback", exclude=True)
    call_id: str
    from_provider: str
    to_provider: str
    reason: ErrorInfo


class ToolCalled(Payload):
    type: Literal["tool.call"] = Field(default="tool.call", exclude=True)
    call_id: str
    tool: str
    arguments: dict[str, Any]


class ToolResulted(Payload):
    type: Literal["tool.result"] = Field(default="tool.result", exclude=True)
    call_id: str
    tool: str
    output: Any = None
    error: ErrorInfo | None = None
    latency_ms: float


class RunCompleted(Payload):
    type: Literal["run.completed"] = Field(default="run.completed", exclude=True)
    output: str
    usage: dict[str, int]
    cost: float


class RunFailed(Payload):
    type: Literal["run.failed"] = Field(default="run.failed", exclude=True)
    error: ErrorInfo
    usage: dict[str, int]
    cost: float


class RunCancelled(Payload):
    type: Literal["run.cancelled"] = Field(default="run.cancelled", exclude=True)
    reason: str
    partial_output: str
    usage: dict[str, int]
    cost: float


EventPayload = Annotated[
    RunQueued
    | RunStarted
    | PlanCreated
    | StepStarted
    | StepFinished
    | ModelRequested
    | MessageDelta
    | ModelResponded
    | ModelRetried
    | ModelFellBack
    | ToolCalled
    | ToolResulted
    | RunCompleted
    | RunFailed
    | RunCancelled,
    Field(discriminator="type"),
]
TerminalPayload = RunCompleted | RunFailed | RunCancelled

_PAYLOADS: TypeAdapter[EventPayload] = TypeAdapter(EventPayload)


def parse_payload(event_type: str, data: dict[str, Any]) -> EventPayload:
    """A payload from its wire form: the event's type and its ``data``."""
    return _PAYLOADS.validate_python({**data, "type": event_type})


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# One encoder made once: ``json.dumps`` builds an encoder per call, which costs more than encoding
# a small event's data. Same options, same text; no circular-reference check (payloads are trees).
_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_encode: Any = (
    _C_ENCODER(None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    if _C_ENCODER is not None
    else None
)


def dump_json(value: Any) -> str:
    """The one JSON text form of event data: compact, UTF-8 kept as is (what every door sends)."""
    if _encode is not None:
        return "".join(_encode(value, 0))
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def payload_json(payload: Payload) -> str:
    """The wire ``data`` of a payload as compact JSON text."""
    return "".join(payload_json_parts(payload))


def payload_json_parts(payload: Payload) -> list[str]:
    """The wire ``data`` as JSON text in pieces that join to :func:`payload_json`. Every piece
    begins and ends outside any JSON string, so text inside a string never spans two pieces.

    A model request repeats the same system prompt and tool definitions in every call of every
    run of a profile — most of the bytes a run records — so their JSON is made once and the same
    piece (the same string object) comes back each time; a reader can cache work per piece."""
    if isinstance(payload, ModelRequested):
        return _model_request_parts(payload)
    return [dump_json(payload.model_dump(mode="json"))]


class _Memo:
    """JSON text of values that recur, by a key; bounded (cleared when full)."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.texts: dict[Any, tuple[Any, str]] = {}

    def get(self, key: Any, value: Any, make: Any) -> str:
        found = self.texts.get(key)
        if found is not None and found[0] is value:
            return found[1]
        text: str = make(value)
        if len(self.texts) >= self.size:
            self.texts.clear()
        self.texts[key] = (value, text)
        return text


_MESSAGES = _Memo()
_SPECS = _Memo()


def _message_json(message: Message) -> str:
    if message.tool_calls:
        return dump_json(message.model_dump(mode="json"))
    key = (message.role, message.content, message.tool_call_id, message.name)
    # equal text is enough: a message without tool calls is these four fields
    found = _MESSAGES.texts.get(key)
    if found is not None:
        return found[1]
    return _MESSAGES.get(key, key, lambda _: dump_json(message.model_dump(mode="json")))


def _model_request_parts(payload: ModelRequested) -> list[str]:
    parts = [
        f'{{"call_id":{dump_json(payload.call_id)},"provider":{dump_json(payload.provider)},'
        f'"model":{dump_json(payload.model)},"params":{dump_json(payload.params)},"messages":['
    ]
    for index, message in enumerate(payload.messages):
        if index:
            parts.append(",")
        parts.append(_message_json(message))
    parts.append('],"tools":[')
    for index, spec in enumerate(payload.tools):
        if index:
            parts.append(",")
        parts.append(_SPECS.get(id(spec), spec, lambda s: dump_json(s.model_dump(mode="json"))))
    parts.append(f'],"response_format":{dump_json(payload.response_format)}}}')
    return parts


@dataclass(slots=True)
class EventDraft:
    """An event before the recorder gives it a place in the run's sequence."""

    payload: EventPayload
    span_id: str | None = None

    @classmethod
    def of(cls, payload: EventPayload, span_id: str | None = None) -> EventDraft:
        return cls(payload, span_id)

    @property
    def type(self) -> EventType:
        return self.payload.type


class RunEvent:
    """One entry of a run's append-only log; ``seq`` starts at 1 and has no gaps.

    Built from a typed payload (when a run records it) or from stored JSON (when it is read back);
    the other form is derived on first use, so streaming a stored log never builds a model and
    recording a live one serialises its payload exactly once."""

    __slots__ = ("_data_json", "_payload", "run_id", "seq", "span_id", "trace_id", "ts", "type")

    def __init__(
        self,
        run_id: str,
        seq: int,
        ts: datetime,
        payload: EventPayload | None = None,
        *,
        type: EventType | None = None,
        data: dict[str, Any] | None = None,
        data_json: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> None:
        if payload is not None:
            type = payload.type
        elif data is not None:
            data_json = dump_json(data)
        if type is None or (payload is None and data_json is None):
            raise ValueError("a RunEvent needs a payload, or a type with its data")
        self.run_id = run_id
        self.seq = seq
        self.type: EventType = type
        self.ts = ts
        self.trace_id = trace_id
        self.span_id = span_id
        self._payload = payload
        self._data_json = data_json

    @property
    def payload(self) -> EventPayload:
        if self._payload is None:
            self._payload = parse_payload(self.type, json.loads(cast(str, self._data_json)))
        return self._payload

    @property
    def data_json(self) -> str:
        """``data`` as compact JSON text; raises ``ValueError``/``TypeError`` if it cannot be encoded."""
        if self._data_json is None:
            self._data_json = payload_json(cast(Payload, self._payload))
        return self._data_json

    @property
    def data(self) -> dict[str, Any]:
        """The payload as the JSON object every door sends (a fresh copy)."""
        value: dict[str, Any] = json.loads(self.data_json)
        return value

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
        """The event as one compact JSON object, built around the already serialised ``data``."""
        return (
            f'{{"run_id":{dump_json(self.run_id)},"seq":{self.seq},"type":"{self.type}",'
            f'"ts":"{self.ts.isoformat()}","data":{self.data_json},'
            f'"trace_id":{dump_json(self.trace_id)},"span_id":{dump_json(self.span_id)}}}'
        )

    def __repr__(self) -> str:
        return f"RunEvent(run_id={self.run_id!r}, seq={self.seq}, type={self.type!r})"


def utc_now() -> datetime:
    return datetime.now(UTC)
