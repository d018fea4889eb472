"""Messages of agent.proto to and from the runtime's shapes.

Requests become a :class:`RunRequest` validated like every door's (so an invalid option names its
field); events and records become their proto mirrors, free-form data as JSON text.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from agentstage.core import strict_json
from agentstage.core.events import RunEvent
from agentstage.core.records import RunRecord
from agentstage.core.tools import validation_details
from agentstage.errors import InvalidInputError
from agentstage.interfaces.grpc.gen import agent_pb2 as pb
from agentstage.runtime.catalog import ToolServerSpec
from agentstage.runtime.requests import RunRequest
from agentstage.settings import Settings
from agentstage.types import RunStatus

MAX_SEQ = 2**53  # beyond any real log; the same bound as the HTTP API's

STATES = {
    RunStatus.QUEUED: pb.RUN_STATE_QUEUED,
    RunStatus.RUNNING: pb.RUN_STATE_RUNNING,
    RunStatus.COMPLETED: pb.RUN_STATE_COMPLETED,
    RunStatus.FAILED: pb.RUN_STATE_FAILED,
    RunStatus.CANCELLED: pb.RUN_STATE_CANCELLED,
}


def bad_field(name: str, message: str) -> InvalidInputError:
    return InvalidInputError(
        f"{name}: {message}",
        code="invalid_request",
        details={"errors": [{"field": name, "message": message}]},
    )


def required(value: str, name: str) -> str:
    if not value.strip():
        raise bad_field(name, "is required")
    return value


def json_object(text: str, name: str) -> dict[str, Any]:
    """A ``*_json`` field: empty means ``{}``; anything else must be a JSON object."""
    if not text.strip():
        return {}
    try:
        value = strict_json.loads(text)
    except json.JSONDecodeError as error:
        raise bad_field(name, f"is not valid JSON ({error.msg} at position {error.pos})") from None
    if not isinstance(value, dict):
        raise bad_field(name, f"must be a JSON object, got {type(value).__name__}")
    return value


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def options(message: pb.RunOptions) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in ("max_steps", "max_tokens", "max_duration"):
        if message.HasField(name):
            found[name] = getattr(message, name)
    params = json_object(message.params_json, "options.params_json")
    if params:
        found["params"] = params
    if message.HasField("tools"):
        found["tools"] = list(message.tools.names)
    return found


def run_request(
    message: pb.ExecuteRequest | pb.ChatMessage, correlation_id: str | None, tenant: str = "default"
) -> RunRequest:
    """Validate a run request like every door does; an invalid option names its field."""
    data: dict[str, Any] = {
        "tenant": tenant,
        "input": message.input,
        "mode": message.mode or None,
        "profile": message.profile or None,
        "options": options(message.options) if message.HasField("options") else {},
        "correlation_id": correlation_id,
    }
    if isinstance(message, pb.ExecuteRequest):
        data["conversation_id"] = message.conversation_id or None
    return RunRequest.parse(data)


def tool_server(request: pb.RegisterToolRequest) -> ToolServerSpec:
    data = {
        "name": request.name,
        "command": request.command or None,
        "args": list(request.args),
        "env": dict(request.env),
        "url": request.url or None,
    }
    try:
        return ToolServerSpec.model_validate(data)
    except ValidationError as error:
        details = validation_details(error)
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise InvalidInputError(
            f"invalid tool server: {summary}", code="invalid_request", details={"errors": details}
        ) from None


def seq_after(value: int, name: str = "after") -> int:
    if value > MAX_SEQ:
        raise bad_field(name, f"{value!r} is beyond any event log (at most {MAX_SEQ})")
    return value


def chunk(event: RunEvent) -> pb.StreamChunk:
    message = pb.StreamChunk(
        run_id=event.run_id,
        seq=event.seq,
        type=event.type,
        data=to_json(event.data),
        trace_id=event.trace_id or "",
        span_id=event.span_id or "",
    )
    message.ts.FromDatetime(event.ts)
    return message


def _stamp(target: Any, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)


def run(record: RunRecord) -> pb.Run:
    message = pb.Run(
        run_id=record.id,
        status=STATES[record.status],
        usage=record.usage,
        cost=record.cost,
        mode=record.resolved_mode or record.mode,
        profile=record.profile,
        last_seq=record.last_seq,
        input=record.input,
        conversation_id=record.conversation_id or "",
    )
    if record.output is not None:
        message.output = record.output
    if record.error_code:
        message.error.code = record.error_code
        message.error.message = record.error_message or ""
    timings = record.timings()
    _stamp(message.timings.created_at, record.created_at)
    _stamp(message.timings.started_at, record.started_at)
    _stamp(message.timings.finished_at, record.finished_at)
    if timings["queue_ms"] is not None:
        message.timings.queue_ms = timings["queue_ms"]
    if timings["duration_ms"] is not None:
        message.timings.duration_ms = timings["duration_ms"]
    return message


def tool(described: dict[str, Any]) -> pb.Tool:
    return pb.Tool(
        id=described["id"],
        name=described["name"],
        version=described["version"],
        category=described["category"],
        description=described["description"],
        parameters_json=to_json(described["parameters"]),
        schema_hash=described["schema_hash"],
    )


def profiles(settings: Settings) -> pb.ListProfilesResponse:
    listed = []
    for name, profile in settings.profiles.items():
        chain = [
            pb.ChainEntry(provider=entry.provider, model=entry.model or "", params_json=to_json(entry.params))
            for entry in profile.chain
        ]
        listed.append(
            pb.Profile(
                name=name,
                description=profile.description,
                is_default=name == settings.default_profile,
                chain=chain,
                params_json=to_json(profile.params),
                limits_json=to_json(profile.limits),
            )
        )
    return pb.ListProfilesResponse(profiles=listed, default_profile=settings.default_profile)
