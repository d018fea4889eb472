"""The run service end to end on a real SQLite store, with the scripted provider as the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentstage.errors import InvalidInputError, NotFoundError, UnknownModeError, UnknownProfileError
from agentstage.runtime.conversations import ConversationService
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService
from agentstage.runtime.snapshot import SNAPSHOT_SCHEMA_VERSION

pytestmark = pytest.mark.anyio

TOOL_THEN_ANSWER = {
    "responses": [
        {
            "text": "Let me compute.",
            "tool_calls": [{"name": "math.calculate", "arguments": {"expression": "6*7"}}],
            "usage": {"input_tokens": 100, "output_tokens": 10},
        },
        {
            "text": "The answer is 42.",
            "usage": {"input_tokens": 150, "output_tokens": 5, "cached_input_tokens": 50},
        },
    ]
}


async def collect(service: RunService, run_id: str, after: int = 0) -> list[Any]:
    return [event async for event in service.stream(run_id, after=after)]


async def test_react_run_records_a_gap_free_event_log(make_service: Callable[..., RunService]) -> None:
    async with make_service(TOOL_THEN_ANSWER) as service:
        record = await service.start(RunRequest(input="what is 6*7?", mode="react"))
        streamed = await collect(service, record.id)
        final = await service.wait(record.id)
        stored = await service.events(record.id)

    assert final.status == "completed"
    assert final.output == "The answer is 42."
    assert [e.seq for e in streamed] == list(range(1, len(streamed) + 1))
    assert [e.to_json_dict() for e in stored] == [e.to_json_dict() for e in streamed]
    types = [e.type for e in streamed]
    assert types[0] == "run.queued" and types[1] == "run.started" and types[-1] == "run.completed"
    assert types.index("tool.call") < types.index("tool.result") < len(types) - 1
    result = next(e for e in streamed if e.type == "tool.result")
    assert result.data["tool"] == "math.calculate:v1" and result.data["output"] == {"result": 42}
    assert {e.trace_id for e in streamed} == {final.trace_id}
    assert final.usage == {
        "input_tokens": 250,
        "output_tokens": 15,
        "cached_input_tokens": 50,
        "total_tokens": 265,
    }
    assert final.last_seq == len(streamed)


async def test_cost_uses_the_price_table(make_service: Callable[..., RunService]) -> None:
    pricing = {"s/*": {"input": 2.0, "output": 10.0, "cached_input": 1.0}}
    async with make_service(TOOL_THEN_ANSWER, pricing=pricing) as service:
        final = await service.run(RunRequest(input="what is 6*7?", mode="react"))
    # (100 + 100 fresh) * 2 + 50 cached * 1 + 15 out * 10, per million
    assert final.cost == pytest.approx((200 * 2 + 50 * 1 + 15 * 10) / 1e6)
    assert final.result()["cost"] == final.cost


async def test_stream_resumes_exactly_after_a_seq(make_service: Callable[..., RunService]) -> None:
    async with make_service(TOOL_THEN_ANSWER) as service:
        record = await service.run(RunRequest(input="what is 6*7?", mode="react"))
        everything = await collect(service, record.id)
        tail = await collect(service, record.id, after=5)
    assert [e.seq for e in tail] == [e.seq for e in everything[5:]]
    assert tail[0].seq == 6


async def test_snapshot_names_prompt_tools_and_masks_secrets(
    make_service: Callable[..., RunService], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-abcdefghijklmnop")
    monkeypatch.setenv("LANG", "C.UTF-8")
    async with make_service(TOOL_THEN_ANSWER) as service:
        final = await service.run(RunRequest(input="what is 6*7?", mode="react"))
        started = (await service.events(final.id))[1]
        snapshot = await service.snapshot(final.id)
        again = await service.run(RunRequest(input="what is 6*7?", mode="react"))
        shared = await service.store.snapshot(final.snapshot_hash or "")
    assert snapshot is not None and final.snapshot_hash
    assert again.snapshot_hash == final.snapshot_hash and shared is not None  # stored once, shared
    assert "input" not in shared and snapshot["input"] == "what is 6*7?" and snapshot["run_id"] == final.id
    assert snapshot["schema_version"] == SNAPSHOT_SCHEMA_VERSION
    assert snapshot["prompt"]["template"] == "react/agent-react.j2" and len(snapshot["prompt"]["hash"]) >= 16
    assert "math.calculate:v1" in [t["id"] for t in snapshot["tools"]]
    assert snapshot["environment"]["OPENAI_API_KEY"] == "***"
    assert snapshot["environment"]["LANG"] == "C.UTF-8"
    assert snapshot["output"] == "The answer is 42." and snapshot["metrics"]["tool_calls"] == 1
    assert "sk-live" not in str(snapshot)
    assert started.data["snapshot_hash"] and started.data["prompt_template"] == "react/agent-react.j2"


async def test_auto_mode_is_resolved_and_recorded(make_service: Callable[..., RunService]) -> None:
    async with make_service({"responses": [{"text": "Hi!"}]}) as service:
        final = await service.run(RunRequest(input="hello, how are you?"))
        started = (await service.events(final.id))[1]
    assert final.mode == "auto" and final.resolved_mode == "chat"
    assert started.data["mode"] == "chat" and started.data["mode_reason"]


async def test_conversation_history_reaches_the_model(make_service: Callable[..., RunService]) -> None:
    script = {
        "rules": [
            {"match": "name is Ada", "text": "Nice to meet you, Ada."},
            {"match": "What is my name", "text": "You are Ada."},
        ]
    }
    async with make_service(script) as service:
        conversations = ConversationService(service)
        conversation = await conversations.create()
        first = await conversations.send(conversation.id, "My name is Ada.", mode="chat")
        await service.wait(first.id)
        second = await conversations.send(conversation.id, "What is my name?", mode="chat")
        await service.wait(second.id)
        request = next(e for e in await service.events(second.id) if e.type == "model.request")
        history = await conversations.history(conversation.id)
    contents = [m["content"] for m in request.data["messages"]]
    assert "My name is Ada." in contents and "Nice to meet you, Ada." in contents
    assert [(m.role, m.content) for m in history] == [
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
        ("assistant", "You are Ada."),
    ]


async def test_planner_shows_its_plan_and_runs_each_step(make_service: Callable[..., RunService]) -> None:
    script = {
        "native_tools": False,
        "responses": [
            {
                "json": {
                    "steps": [
                        {
                            "description": "Multiply",
                            "tool": "math.calculate",
                            "arguments": {"expression": "6*7"},
                        },
                        {"description": "Explain the result"},
                    ]
                }
            },
            {"text": "It is 42."},
            {"text": "6 times 7 is 42."},
        ],
    }
    async with make_service(script) as service:
        final = await service.run(RunRequest(input="compute 6*7 then explain", mode="planner"))
        events = await service.events(final.id)
    plan = next(e for e in events if e.type == "plan.created")
    assert [s["description"] for s in plan.data["steps"]] == ["Multiply", "Explain the result"]
    assert any(e.type == "tool.result" and e.data["output"] == {"result": 42} for e in events)
    kinds = [e.data["kind"] for e in events if e.type == "step.started"]
    assert kinds[0] == "plan" and "tool" in kinds and kinds[-1] == "synthesize"
    assert final.status == "completed" and final.output == "6 times 7 is 42."


async def test_batch_keeps_input_order_and_reports_rejections(
    make_service: Callable[..., RunService],
) -> None:
    script = {"rules": [{"match": "slow", "text": "slow done", "delay": 0.2}], "responses": [{"text": "ok"}]}
    async with make_service(script) as service:
        requests = [
            RunRequest(input="slow one", mode="chat"),
            RunRequest(input="   ", mode="chat"),
            RunRequest(input="fast one", mode="chat"),
        ]
        items = await service.batch(requests, parallel=3)
    assert [item.index for item in items] == [0, 1, 2]
    assert items[0].record is not None and items[0].record.output == "slow done"
    assert items[1].record is None and items[1].error is not None and items[1].error["code"] == "empty_input"
    assert items[2].record is not None and items[2].record.output == "ok"


@pytest.mark.parametrize(
    ("request_fields", "error_type", "code"),
    [
        ({"input": ""}, InvalidInputError, "empty_input"),
        ({"input": "caf\udce9"}, InvalidInputError, "input_not_unicode"),  # undecoded bytes, from any door
        ({"input": "hi", "mode": "telepathy"}, UnknownModeError, "unknown_mode"),
        ({"input": "hi", "profile": "nope"}, UnknownProfileError, "unknown_profile"),
        ({"input": "hi", "conversation_id": "missing"}, NotFoundError, "conversation_not_found"),
        ({"input": "hi", "options": {"tools": ["no.such.tool"]}}, NotFoundError, "tool_not_found"),
    ],
)
async def test_bad_requests_are_refused_before_anything_is_stored(
    chat_service: RunService, request_fields: dict[str, Any], error_type: type[Exception], code: str
) -> None:
    with pytest.raises(error_type) as raised:
        await chat_service.start(RunRequest.model_validate(request_fields))
    assert getattr(raised.value, "code", None) == code
    assert await chat_service.count_runs() == 0


async def test_unknown_request_fields_are_refused_by_name() -> None:
    with pytest.raises(InvalidInputError, match=r"options\.temperature"):
        RunRequest.parse({"input": "hi", "options": {"temperature": 2}})


async def test_unknown_run_ids_are_not_found(chat_service: RunService) -> None:
    with pytest.raises(NotFoundError, match="unknown run 'nope'"):
        await chat_service.status("nope")
    with pytest.raises(NotFoundError):
        await chat_service.cancel("nope")
