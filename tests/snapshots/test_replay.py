"""Exact replay and live re-run through a real RunService on a real SQLite file.

A replay answers from the recording: with the original's provider gone and its tool's data
changed, it still reproduces the run exactly; when something that drives the run changed, it
stops with ``replay_diverged`` naming the step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentstage.core.orchestrators.routing import routed_tools
from agentstage.core.tools import Toolset
from agentstage.errors import ConfigError, ConflictError, NotFoundError
from agentstage.runtime.conversations import ConversationService
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService
from agentstage.runtime.snapshot_file import content_hash
from agentstage.runtime.wiring import build_service
from agentstage.tools.replay import replay_tools
from agentstage.types import RunStatus
from conftest import make_settings, scripted_config

from .conftest import (
    ANSWER,
    QUESTION,
    REACT,
    sales_db,
    settings_for,
    tool_calls,
    tool_results,
    types,
    write_script,
)

pytestmark = pytest.mark.anyio


async def replay(service: RunService, run_id: str, **options: Any) -> Any:
    started = await service.replay(run_id, **options)
    return await service.wait(started.id)


async def test_a_react_run_replays_exactly_with_its_provider_and_tool_data_gone(
    home: Path, tmp_path: Path
) -> None:
    script = write_script(tmp_path / "script.json", REACT)
    async with build_service(settings_for(home, script, sales_db(tmp_path / "sales.db", 3))) as service:
        original = await service.run(RunRequest(input=QUESTION, mode="react"))
        recorded = await service.events(original.id)
    assert original.status == RunStatus.COMPLETED and original.output == ANSWER, original.error_message

    script.unlink()  # the scripted provider cannot be built any more
    empty = sales_db(tmp_path / "empty.db", 0)  # a sql.query that really ran would now count 0
    async with build_service(settings_for(home, script, empty)) as service:
        replayed = await replay(service, original.id)
        events = await service.events(replayed.id)
        live = await replay(service, original.id, live=True)

    assert replayed.status == RunStatus.COMPLETED, replayed.error_message
    assert replayed.replay_of == original.id and replayed.id != original.id
    assert replayed.output == original.output == ANSWER
    assert types(events) == types(recorded)
    assert (
        tool_calls(events)
        == tool_calls(recorded)
        == [
            ("sql.query:v1", {"query": "SELECT count(*) AS n FROM sales"}),
            ("math.calculate:v1", {"expression": "3 * 12"}),
        ]
    )
    assert tool_results(events) == tool_results(recorded)
    assert tool_results(events)[0] == (
        {"columns": ["n"], "rows": [[3]], "row_count": 1, "truncated": False},
        None,
    )
    deltas = [e.data["text"] for e in events if e.type == "message.delta"]
    assert deltas == [e.data["text"] for e in recorded if e.type == "message.delta"] and len(deltas) > 3
    assert {e.data["provider"] for e in events if e.type.startswith("model.")} == {"replay"}
    assert replayed.usage == original.usage and replayed.cost == 0.0
    # the original's provider really is unusable here: a live re-run of the same config fails
    assert live.status == RunStatus.FAILED and live.error_code == "config_invalid", live.error_message
    assert "cannot read script" in (live.error_message or "")


async def test_a_changed_prompt_stops_the_replay_at_the_step_it_changes(home: Path, tmp_path: Path) -> None:
    settings = settings_for(home, REACT, sales_db(tmp_path / "sales.db", 3))
    async with build_service(settings) as service:
        original = await service.run(RunRequest(input=QUESTION, mode="react"))
    prompts = home / "prompts" / "react"
    prompts.mkdir(parents=True)
    (prompts / "agent-react.j2").write_text(
        "You are a different agent now. Tools: {{ tools|length }}", "utf-8"
    )
    async with build_service(settings) as service:
        replayed = await replay(service, original.id)
        events = await service.events(replayed.id)
    assert replayed.status == RunStatus.FAILED and replayed.error_code == "replay_diverged"
    message = replayed.error_message or ""
    assert "step 1 (llm think 1)" in message and "message 1 (system) differs" in message, message
    assert types(events)[-3:] == ["step.started", "model.request", "run.failed"]  # stopped at once


async def test_an_unrecorded_tool_call_stops_the_replay_and_names_the_step(
    home: Path, tmp_path: Path
) -> None:
    """Edit a recorded answer so the model now asks for one more tool: the replay must refuse to
    make up a result for it (no tool runs) and say where it left the recording."""
    async with build_service(settings_for(home, REACT, sales_db(tmp_path / "sales.db", 3))) as service:
        original = await service.run(RunRequest(input=QUESTION, mode="react"))
        document = await service.snapshots.export(original.id)
    last = [e for e in document["events"] if e["type"] == "model.response"][-1]
    extra = {"id": "tool_extra", "name": "math.calculate", "arguments": {"expression": "36 / 2"}}
    last["data"]["tool_calls"] = [extra]
    last["data"]["message"]["tool_calls"] = [extra]
    document["hash"] = content_hash(document)
    other = tmp_path / "other-home"
    other.mkdir()
    async with build_service(settings_for(other, REACT, sales_db(tmp_path / "other.db", 1))) as service:
        await service.snapshots.import_run(json.dumps(document))
        replayed = await replay(service, original.id)
        events = await service.events(replayed.id)
    assert replayed.error_code == "replay_diverged"
    message = replayed.error_message or ""
    assert "step 5 (llm think 3)" in message and "started step 6 (tool math.calculate:v1)" in message, message
    assert "the original had ended here" in message and ANSWER[:20] in message
    assert not [e for e in events if e.type == "tool.call" and e.data["arguments"] == extra["arguments"]]


async def test_failures_and_cancellations_replay_as_they_happened(home: Path, tmp_path: Path) -> None:
    loop = {"responses": [{"tool_calls": [{"name": "math.calculate", "arguments": {"expression": "1+1"}}]}]}
    broken = {
        "responses": [{"text": "Thinking… ", "error": {"code": "model_error", "message": "upstream broke"}}]
    }
    slow = {"responses": [{"deltas": [f"w{i} " for i in range(60)], "delta_delay": 0.05}]}
    async with build_service(
        settings_for(home, write_script(tmp_path / "loop.json", loop), sales_db(tmp_path / "s.db", 1))
    ) as service:
        stuck = await service.run(
            RunRequest.parse({"input": "loop", "mode": "react", "options": {"max_steps": 2}})
        )
        again = await replay(service, stuck.id)
        difference = await service.snapshots.diff(stuck.id, again.id)
    assert stuck.error_code == "max_steps" and again.error_code == "max_steps", again.error_message
    assert again.error_message == stuck.error_message and difference["first_divergence"] is None

    other = tmp_path / "h2"
    other.mkdir()
    async with build_service(settings_for(other, broken, sales_db(tmp_path / "s2.db", 1))) as service:
        failed = await service.run(RunRequest(input="hello", mode="chat"))
        again = await replay(service, failed.id)
        assert types(await service.events(again.id)) == types(await service.events(failed.id))
    assert failed.error_code == again.error_code == "model_error"
    assert again.error_message == failed.error_message

    third = tmp_path / "h3"
    third.mkdir()
    async with build_service(settings_for(third, slow, sales_db(tmp_path / "s3.db", 1))) as service:
        record = await service.start(RunRequest(input="talk slowly", mode="chat"))
        async for event in service.stream(record.id):
            if event.type == "message.delta" and event.data["text"] == "w5 ":
                await service.cancel(record.id, reason="enough of that")
        cancelled = await service.wait(record.id)
        again = await replay(service, cancelled.id)
        original_log, replay_log = await service.events(cancelled.id), await service.events(again.id)
    assert cancelled.status == again.status == RunStatus.CANCELLED
    assert again.error_message == "enough of that" and again.output == cancelled.output
    assert types(replay_log) == types(original_log)
    assert replay_log[-1].data["partial_output"] == original_log[-1].data["partial_output"]


async def test_a_planner_run_and_a_json_action_run_replay_exactly(home: Path, tmp_path: Path) -> None:
    plan = {"steps": [{"description": "add", "tool": "math.calculate", "arguments": {"expression": "2+2"}},
                      {"description": "explain the sum"}]}  # fmt: skip
    planner = {"responses": [{"json": plan}, {"text": "Four is the sum."}, {"text": "2+2 is 4."}]}
    actions = {
        "native_tools": False,
        "responses": [
            {"json": {"tool": "math.calculate", "arguments": {"expression": "6*7"}}},
            {"json": {"answer": "It is 42."}},
        ],
    }
    database = sales_db(tmp_path / "s.db", 1)
    for name, script, mode in (("planner", planner, "planner"), ("actions", actions, "react")):
        where = tmp_path / name
        where.mkdir()
        async with build_service(settings_for(where, script, database)) as service:
            original = await service.run(RunRequest(input="what is 2+2, explained?", mode=mode))
            replayed = await replay(service, original.id)
            a, b = await service.events(original.id), await service.events(replayed.id)
        assert original.status == RunStatus.COMPLETED, original.error_message
        assert replayed.status == RunStatus.COMPLETED, replayed.error_message
        assert replayed.output == original.output and types(a) == types(b) and tool_calls(a) == tool_calls(b)


async def test_a_conversation_turn_replays_with_its_history_and_leaves_the_conversation_alone(
    home: Path, tmp_path: Path
) -> None:
    script = {
        "rules": [{"match": "my name", "text": "Your name is Ada."}],
        "responses": [{"text": "Hello Ada."}],
    }
    async with build_service(settings_for(home, script, sales_db(tmp_path / "s.db", 1))) as service:
        conversations = ConversationService(service)
        conversation = await conversations.create()
        await service.run(RunRequest(input="My name is Ada.", mode="chat", conversation_id=conversation.id))
        second = await service.run(
            RunRequest(input="What is my name?", mode="chat", conversation_id=conversation.id)
        )
        before = await service.store.messages(conversation.id)
        replayed = await replay(service, second.id)
        after = await service.store.messages(conversation.id)
        shown = await service.snapshots.show(replayed.id)
    assert replayed.status == RunStatus.COMPLETED, replayed.error_message
    assert replayed.output == "Your name is Ada." and replayed.conversation_id is None
    assert len(before) == len(after) == 4
    assert shown["history_messages"] == 2 and shown["replay_of"] == second.id


async def test_a_live_rerun_uses_the_recorded_configuration_or_the_overrides(
    home: Path, tmp_path: Path
) -> None:
    other = {"responses": [{"text": "An answer from the other profile."}]}
    config = settings_for(
        home,
        {"responses": [{"text": "First answer."}]},
        sales_db(tmp_path / "s.db", 1),
        providers={"o": {"type": "scripted", "script": other}},
        profiles={
            "t": {"chain": [{"provider": "s"}], "params": {"temperature": 0.3}},
            "other": {"chain": [{"provider": "o"}]},
        },
    )
    async with build_service(config) as service:
        original = await service.run(RunRequest(input="say something", mode="chat"))
    changed = config.model_copy(
        update={
            "profiles": {
                **config.profiles,
                "t": config.profiles["t"].model_copy(update={"params": {"temperature": 0.9}}),
            }
        }
    )
    async with build_service(changed) as service:
        same = await replay(service, original.id, live=True)
        switched = await replay(service, original.id, live=True, profile="other", model="bigger-model")
        same_snapshot = await service.snapshots.show(same.id)
        switched_snapshot = await service.snapshots.show(switched.id)
        with pytest.raises(ConfigError) as refused:
            await service.replay(original.id, profile="other")
        exact = await replay(service, original.id)
        with pytest.raises(ConfigError) as nested:
            await service.replay(exact.id, live=True)
    assert same.replay_of == original.id and same.output == "First answer." and same.profile == "t"
    assert same_snapshot["profile"]["params"] == {"temperature": 0.3}  # as recorded, not as now configured
    assert switched.output == "An answer from the other profile." and switched.profile == "other"
    assert switched_snapshot["profile"]["chain"][0]["model"] == "bigger-model"
    assert switched_snapshot["replay_of"] == original.id
    assert refused.value.code == "replay_override_needs_live"
    assert nested.value.code == "replay_provider_missing" and "itself an exact replay" in nested.value.message


async def test_replay_is_refused_for_unknown_running_and_other_tenants_runs(
    home: Path, tmp_path: Path
) -> None:
    slow = {
        "responses": [{"deltas": ["slow "] * 200, "delta_delay": 0.05}],
        "rules": [{"match": "quick", "text": "ok"}],
    }
    settings = settings_for(home, slow, sales_db(tmp_path / "s.db", 1), runtime={"max_concurrent_runs": 1})
    async with build_service(settings) as service:
        done = await service.run(RunRequest(input="quick one", mode="chat"))
        running = await service.start(RunRequest(input="take your time", mode="chat"))
        async for event in service.stream(running.id):
            if event.type == "run.started":
                break
        waiting = await service.start(RunRequest(input="and me", mode="chat"))  # no free slot: queued
        count = await service.count_runs()
        with pytest.raises(ConflictError) as busy:
            await service.replay(running.id)
        with pytest.raises(ConflictError) as queued:
            await service.replay(waiting.id)
        with pytest.raises(ConflictError) as unstarted:
            await service.snapshots.show(waiting.id)
        with pytest.raises(NotFoundError) as unknown:
            await service.replay("01234567-89ab-7def-8123-456789abcdef")
        with pytest.raises(NotFoundError) as foreign:
            await service.replay(done.id, tenant="acme")
        assert await service.count_runs() == count  # nothing was started
        await service.cancel(waiting.id)
        await service.cancel(running.id)
    assert busy.value.code == "run_not_finished" and "still running" in busy.value.message
    assert queued.value.code == "run_not_finished" and "still queued" in queued.value.message
    assert unstarted.value.code == "run_not_started" and "has not started" in unstarted.value.message
    assert unknown.value.code == foreign.value.code == "run_not_found"


SAMPLE_QUERY = "SELECT c.region, count(*) AS n FROM customers c GROUP BY c.region ORDER BY n DESC LIMIT 1"
SAMPLE_RUNS = {
    "react": [
        {"json": {"tool": "sql.query", "arguments": {"query": SAMPLE_QUERY}}},
        {"json": {"answer": "That region has the most customers."}},
    ],
    "planner": [
        {"json": {"steps": [{"description": "count customers per region", "tool": "sql.query",
                             "arguments": {"query": SAMPLE_QUERY}},
                            {"description": "name the region"}]}},
        {"text": "That region leads."},
        {"text": "That region has the most customers."},
    ],
}  # fmt: skip


@pytest.mark.parametrize("mode", ["react", "planner"])
async def test_a_json_action_run_over_the_sample_sales_data_replays_exactly(
    home: Path, tmp_path: Path, mode: str
) -> None:
    """A small model's run over the bundled sales data: the question's words route it to
    sql.query (react then lists that tool alone); the replay must route and prompt the same way."""
    script = {"native_tools": False, "responses": SAMPLE_RUNS[mode]}
    settings = make_settings(home, scripted_config(script, tools={"sql_timeout": 60, "call_timeout": 120}))
    question = "Which region has the most customers? Then name it."
    async with build_service(settings) as service:
        original = await service.run(RunRequest(input=question, mode=mode))
        snapshot = await service.snapshots.show(original.id)
        replayed = await replay(service, original.id)
        a, b = await service.events(original.id), await service.events(replayed.id)
    assert original.status == RunStatus.COMPLETED, original.error_message
    assert tool_calls(a) == [("sql.query:v1", {"query": SAMPLE_QUERY})]
    if mode == "react":
        system = next(e for e in a if e.type == "model.request").data["messages"][0]["content"]
        assert "sql.query" in system and "math.calculate" not in system  # routed: one tool shown
    tools = {t["id"]: t for t in snapshot["tools"]}
    assert {"region", "customer"} <= set(tools["sql.query:v1"]["keywords"])
    assert replayed.status == RunStatus.COMPLETED, replayed.error_message
    assert replayed.output == original.output and types(a) == types(b) and tool_calls(a) == tool_calls(b)
    assert tool_results(a) == tool_results(b)


def test_a_replaying_tool_is_routed_to_by_its_recorded_keywords() -> None:
    """A tool that is no longer installed has no guide to ask: the snapshot's keywords route."""
    spec = {"name": "crm.lookup", "version": "v2", "category": "data", "parameters": {"type": "object"},
            "keywords": ["invoice", "customer"]}  # fmt: skip
    [recorded] = replay_tools([], [spec])
    [unrecorded] = replay_tools([], [{k: v for k, v in spec.items() if k != "keywords"}])
    assert routed_tools("Find the invoice of Ada", Toolset([recorded])) == ["crm.lookup"]
    assert routed_tools("Find the invoice of Ada", Toolset([unrecorded])) == []
