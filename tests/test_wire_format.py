"""The wire format does not change: SSE and WebSocket frames recorded from an earlier release of
every event type are produced byte for byte by today's typed events, whether an event is built
from its typed payload (as a run records it) or from stored JSON (as a resumed stream reads it)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agentstage.core.events import RunEvent, parse_payload

FIXTURES = Path(__file__).parent / "fixtures" / "wire_frames.jsonl"


def recorded() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURES.read_text(encoding="utf-8").splitlines()]


def sse_frame(event: RunEvent) -> str:
    """What the SSE door writes for an event (interfaces/http/sse.py)."""
    from agentstage.interfaces.http.sse import format_event

    return format_event(event).decode()


def ws_frame(event: RunEvent) -> str:
    """What the WebSocket door sends for an event (interfaces/http/ws.py)."""
    return json.dumps(event.to_json_dict(), ensure_ascii=False, default=str)


def test_the_fixtures_cover_every_event_type() -> None:
    from typing import get_args

    from agentstage.core.events import EventType

    types = {json.loads(frame["ws"])["type"] for frame in recorded()}
    assert types == set(get_args(EventType))


@pytest.mark.parametrize("frame", recorded(), ids=lambda f: json.loads(f["ws"])["type"])
def test_typed_events_serialise_exactly_as_before(frame: dict[str, Any]) -> None:
    wire = json.loads(frame["ws"])
    common = {"trace_id": wire["trace_id"], "span_id": wire["span_id"]}
    ts = datetime.fromisoformat(wire["ts"])
    typed = RunEvent(wire["run_id"], wire["seq"], ts, parse_payload(wire["type"], wire["data"]), **common)
    stored = RunEvent(wire["run_id"], wire["seq"], ts, type=wire["type"], data=wire["data"], **common)
    for event in (typed, stored):
        assert sse_frame(event) == frame["sse"]
        assert ws_frame(event) == frame["ws"]
        assert event.to_json() == json.dumps(wire, separators=(",", ":"), ensure_ascii=False)
    assert type(stored.payload) is type(typed.payload)
