"""Comparing two runs: their configuration field by field, their event logs down to the first
point where they diverge, and their outcomes side by side.

Events are compared by what the agent *did and got* — the messages it sent, the text it streamed,
the tools it called and with which arguments, what came back, the steps and plans — never by ids,
timestamps, latencies or provider names (configuration differences are listed on their own).
An exact replay uses the same comparison, event by event, to notice the moment it diverges.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentstage.core.events import RunEvent

NOT_COMPARED = frozenset(
    {"run_id", "created_at", "started_at", "finished_at", "output", "status", "metrics", "replay_of"}
)
ABSENT = "(absent)"
SKIPPED_EVENTS = frozenset({"run.queued", "run.started"})


# configuration --------------------------------------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a snapshot by dotted path; tools are keyed by their id, other lists by index."""
    if isinstance(value, Mapping):
        if not value and prefix:
            return {prefix: {}}
        leaves: dict[str, Any] = {}
        for key in sorted(value):
            leaves.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return leaves
    if isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
        leaves = {}
        for index, item in enumerate(value):
            label = item.get("id") if prefix == "tools" else None
            leaves.update(flatten(item, f"{prefix}[{label if label is not None else index}]"))
        return leaves
    return {prefix: value}


def config_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every configuration field (and input, mode, options) that differs between two snapshots."""
    left = flatten({k: v for k, v in a.items() if k not in NOT_COMPARED})
    right = flatten({k: v for k, v in b.items() if k not in NOT_COMPARED})
    left, right = _without_hollow(left, right), _without_hollow(right, left)
    changes = []
    for field in sorted(left.keys() | right.keys()):
        if field in left and field in right:
            if left[field] != right[field]:
                changes.append({"field": field, "change": "changed", "a": left[field], "b": right[field]})
        elif field in left:
            changes.append({"field": field, "change": "removed", "a": left[field], "b": None})
        else:
            changes.append({"field": field, "change": "added", "a": None, "b": right[field]})
    return changes


def _without_hollow(leaves: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Drop an empty object whose fields the other side lists (they are reported one by one)."""
    return {
        field: value
        for field, value in leaves.items()
        if value != {} or not any(key.startswith((f"{field}.", f"{field}[")) for key in other)
    }


# events ------------------------------------------------------------------------------------------------


def _call(call: Mapping[str, Any]) -> tuple[Any, str]:
    return call.get("name"), _canonical(call.get("arguments", {}))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _message(message: Mapping[str, Any]) -> tuple[Any, ...]:
    calls = tuple(_call(c) for c in message.get("tool_calls") or [])
    return message.get("role"), message.get("content"), calls, message.get("name")


def _error(error: Mapping[str, Any] | None) -> tuple[Any, Any] | None:
    return None if not error else (error.get("code"), error.get("message"))


def signature(event_type: str, data: Mapping[str, Any]) -> tuple[Any, ...]:
    """What must be equal for two events to count as the same behaviour."""
    match event_type:
        case "step.started":
            return event_type, data.get("step_id"), data.get("kind"), data.get("name")
        case "step.finished":
            parts = (data.get("step_id"), data.get("kind"), data.get("name"), data.get("status"))
            return event_type, *parts, _error(data.get("error"))
        case "plan.created":
            return event_type, _canonical(data.get("steps"))
        case "model.request":
            messages = tuple(_message(m) for m in data.get("messages", []))
            return (
                event_type,
                messages,
                _canonical(data.get("tools")),
                _canonical(data.get("response_format")),
            )
        case "message.delta":
            return event_type, data.get("text")
        case "model.response":
            calls = tuple(_call(c) for c in data.get("tool_calls") or [])
            content = (data.get("message") or {}).get("content")
            return event_type, content, calls, data.get("finish_reason")
        case "model.retry":
            return event_type, data.get("attempt"), (data.get("error") or {}).get("code")
        case "model.fallback":
            reason = (data.get("reason") or {}).get("code")
            return event_type, data.get("from_provider"), data.get("to_provider"), reason
        case "tool.call":
            return event_type, data.get("tool"), _canonical(data.get("arguments"))
        case "tool.result":
            return event_type, data.get("tool"), _canonical(data.get("output")), _error(data.get("error"))
        case "run.completed":
            return event_type, data.get("output")
        case "run.failed":
            return event_type, (data.get("error") or {}).get("code")
        case "run.cancelled":
            return event_type, data.get("partial_output")
    return (event_type, _canonical(data))


def _short(text: Any, limit: int = 80) -> str:
    value = text if isinstance(text, str) else _canonical(text)
    value = " ".join(value.split())
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def summarize(event_type: str, data: Mapping[str, Any]) -> str:
    """What one side did, in words (it follows "the replay …", "run A …")."""
    match event_type:
        case "step.started":
            return f"started step {data.get('step_id')} ({data.get('kind')} {data.get('name')})"
        case "step.finished":
            error = data.get("error") or {}
            tail = f": {error.get('code')}" if error else ""
            return f"finished step {data.get('step_id')} ({data.get('status')}{tail})"
        case "plan.created":
            steps = [f"{s.get('description')}" + (f" [{s['tool']}]" if s.get("tool") else "")
                     for s in data.get("steps", [])]  # fmt: skip
            return f"planned {len(steps)} step(s): {_short('; '.join(steps), 120)}"
        case "model.request":
            messages = data.get("messages", [])
            last = messages[-1] if messages else {}
            return f"asked the model ({len(messages)} messages, last {last.get('role')}: {_short(last.get('content'))})"
        case "message.delta":
            return f"streamed {_short(data.get('text'))}"
        case "model.response":
            content = (data.get("message") or {}).get("content")
            calls = ", ".join(
                f"{c.get('name')}({_canonical(c.get('arguments'))})" for c in data.get("tool_calls") or []
            )
            return f"got the answer {_short(content)}" + (f" asking for {calls}" if calls else "")
        case "model.retry":
            return f"retried {data.get('provider')} after {(data.get('error') or {}).get('code')}"
        case "model.fallback":
            return f"fell back from {data.get('from_provider')} to {data.get('to_provider')}"
        case "tool.call":
            return f"called {data.get('tool')} with {_canonical(data.get('arguments'))}"
        case "tool.result":
            error = data.get("error")
            if error:
                return f"got {data.get('tool')} error {error.get('code')}: {_short(error.get('message'))}"
            return f"got {data.get('tool')} → {_short(data.get('output'))}"
        case "run.completed":
            return f"completed with the answer {_short(data.get('output'))}"
        case "run.failed":
            error = data.get("error") or {}
            return f"failed with {error.get('code')}: {_short(error.get('message'), 160)}"
        case "run.cancelled":
            return f"was cancelled ({_short(data.get('reason'))})"
    return event_type


def request_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """Where two model requests differ, in words (None when they do not)."""
    left, right = a.get("messages", []), b.get("messages", [])
    for index, (one, other) in enumerate(zip(left, right, strict=False)):
        if _message(one) != _message(other):
            return f"message {index + 1} ({one.get('role')}) differs"
    if len(left) != len(right):
        return f"{len(left)} messages against {len(right)}"
    if _canonical(a.get("tools")) != _canonical(b.get("tools")):
        return "the tool definitions differ"
    if _canonical(a.get("response_format")) != _canonical(b.get("response_format")):
        return "the requested answer format differs"
    return None


@dataclass(frozen=True)
class Unit:
    """One comparable piece of a log: an event, or a model call's streamed text merged."""

    seq: int
    type: str
    data: dict[str, Any]

    @property
    def signature(self) -> tuple[Any, ...]:
        return signature(self.type, self.data)


def units(events: Iterable[RunEvent]) -> list[Unit]:
    """A log as comparable units: consecutive deltas of one call become one (chunking is the
    provider's business, the text is the behaviour); queueing and start-up are configuration."""
    found: list[Unit] = []
    for event in events:
        if event.type in SKIPPED_EVENTS:
            continue
        data = event.data
        previous = found[-1] if found else None
        if (
            event.type == "message.delta"
            and previous is not None
            and previous.type == "message.delta"
            and previous.data.get("call_id") == data.get("call_id")
        ):
            merged = {**previous.data, "text": previous.data.get("text", "") + data.get("text", "")}
            found[-1] = Unit(previous.seq, previous.type, merged)
            continue
        found.append(Unit(event.seq, event.type, data))
    return found


def step_of(step: Mapping[str, Any] | None) -> str:
    if step is None:
        return "before the first step"
    return f"step {step.get('step_id')} ({step.get('kind')} {step.get('name')})"


def first_divergence(a: Sequence[RunEvent], b: Sequence[RunEvent]) -> dict[str, Any] | None:
    """The first unit where two logs differ: the step it happened in and what each side did."""
    left, right = units(a), units(b)
    step: dict[str, Any] | None = None
    for index in range(max(len(left), len(right))):
        one = left[index] if index < len(left) else None
        other = right[index] if index < len(right) else None
        if one is not None and other is not None and one.signature == other.signature:
            if one.type == "step.started":
                step = one.data
            continue
        detail = None
        if one is not None and other is not None and one.type == other.type == "model.request":
            detail = request_difference(one.data, other.data)
        return {
            "index": index,
            "step": None if step is None else {k: step.get(k) for k in ("step_id", "kind", "name")},
            "where": step_of(step),
            "detail": detail,
            "a": _side(one),
            "b": _side(other),
        }
    return None


def _side(unit: Unit | None) -> dict[str, Any] | None:
    if unit is None:
        return None
    return {"seq": unit.seq, "type": unit.type, "summary": summarize(unit.type, unit.data)}


# outcome ------------------------------------------------------------------------------------------------


def outcome(snapshot: Mapping[str, Any], events: Sequence[RunEvent]) -> dict[str, Any]:
    """Output and metrics of one run, in the shape shown side by side."""
    metrics = snapshot.get("metrics") or {}
    usage = metrics.get("usage") or {}
    error = None
    if events and events[-1].type == "run.failed":
        error = events[-1].data.get("error")
    return {
        "run_id": snapshot.get("run_id"),
        "status": snapshot.get("status"),
        "output": snapshot.get("output"),
        "error": error,
        "input_tokens": usage.get("input_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "cost": metrics.get("cost", 0.0),
        "latency_ms": metrics.get("latency_ms"),
        "model_calls": metrics.get("model_calls"),
        "tool_calls": metrics.get("tool_calls"),
        "steps": metrics.get("steps"),
        "events": len(events),
    }


def diff_runs(
    a: Mapping[str, Any], a_events: Sequence[RunEvent], b: Mapping[str, Any], b_events: Sequence[RunEvent]
) -> dict[str, Any]:
    """The whole comparison of two runs, as ``agent snapshot diff --json`` prints it."""
    return {
        "a": a.get("run_id"),
        "b": b.get("run_id"),
        "config": config_changes(a, b),
        "first_divergence": first_divergence(a_events, b_events),
        "outcome": {"a": outcome(a, a_events), "b": outcome(b, b_events)},
    }
