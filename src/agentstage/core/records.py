"""Stored records: a run, a conversation, a conversation message. Doors read these shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from agentstage.types import RunStatus


class RunRecord(BaseModel):
    id: str
    tenant: str = "default"
    status: RunStatus
    input: str
    mode: str
    profile: str
    options: dict[str, Any] = Field(default_factory=dict)
    resolved_mode: str | None = None
    conversation_id: str | None = None
    correlation_id: str | None = None
    output: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    cost: float = 0.0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_seq: int = 0
    worker_id: str | None = None
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False
    attempt: int = Field(
        default=1, description="Which attempt at the run this is; every write of the run is fenced by it."
    )
    trace_id: str | None = None
    snapshot_hash: str | None = Field(
        default=None, description="Hash of the configuration snapshot the run used (stored once per hash)."
    )
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Counts and latency: model calls, tool calls, steps, latency_ms."
    )
    replay_of: str | None = Field(default=None, description="The run this one replays or re-runs.")

    def timings(self) -> dict[str, Any]:
        """Wall-clock facts about the run, in the shape every door returns."""
        end = self.finished_at
        return {
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": end.isoformat() if end else None,
            "queue_ms": _ms(self.created_at, self.started_at),
            "duration_ms": _ms(self.started_at, end),
        }

    def result(self) -> dict[str, Any]:
        """The run's answer: what ``agent run --output json`` prints and ``POST /run`` returns."""
        body: dict[str, Any] = {
            "run_id": self.id,
            "status": self.status.value,
            "output": self.output,
            "usage": self.usage,
            "cost": self.cost,
            "timings": self.timings(),
            "mode": self.resolved_mode or self.mode,
            "profile": self.profile,
        }
        if self.error_code:
            body["error"] = {"code": self.error_code, "message": self.error_message}
        return body


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


class ConversationRecord(BaseModel):
    id: str
    tenant: str = "default"
    title: str = ""
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)


class MessageRecord(BaseModel):
    conversation_id: str
    position: int
    role: str
    content: str
    run_id: str | None = None
    created_at: datetime


class ApiKeyRecord(BaseModel):
    """An API key as stored: only its SHA-256 hash and a short prefix to recognise it by."""

    id: str
    name: str
    prefix: str
    key_hash: str
    requests_per_minute: int | None = None
    created_at: datetime
    revoked_at: datetime | None = None
    role: str = "operator"
    tenant: str = "default"
    scopes: list[str] | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    rotated_at: datetime | None = None


class BatchRecord(BaseModel):
    """A batch request: for each input, in order, its run id or why it was rejected."""

    id: str
    created_at: datetime
    items: list[dict[str, Any]]
    tenant: str = "default"


@dataclass(slots=True)
class SpanRecord:
    """A finished span as the store keeps it: ids in W3C hex, times in Unix nanoseconds,
    ``status`` ``ok``/``error``/``unset``; ``events`` are ``{name, time_ns, attributes}``."""

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    parent_span_id: str | None = None
    run_id: str | None = None
    kind: str = "internal"
    status: str = "unset"
    status_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "run_id": self.run_id,
            "name": self.name,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status,
            "status_message": self.status_message,
            "attributes": self.attributes,
            "events": self.events,
        }


@dataclass(frozen=True, slots=True)
class ToolTiming:
    """How one tool call's time split between checking its arguments and its work (Unix
    nanoseconds), measured by the tool's wrapper: the run's events know only when the call
    started and ended. Kept in the store; a run's ``tool.validate`` and ``tool.run`` spans come
    from it."""

    run_id: str
    call_id: str
    validate_start_ns: int
    validate_end_ns: int
    run_start_ns: int
    run_end_ns: int
    failed: bool  # the tool raised
