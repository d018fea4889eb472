"""The run's write side: a failed write fails only its own run, endings the store cannot take are
repaired, sinks never slow a run, and conversations number their messages in the store.

Faults are injected through real SQLite triggers on the real store file, never by mocking."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentstage.core.events import RunEvent
from agentstage.core.records import RunRecord
from agentstage.errors import StoreError
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService
from agentstage.runtime.sinks import QueuedSink

pytestmark = pytest.mark.anyio

POISON = "Z_POISON_Z"
STREAMING = {
    "rules": [
        {
            "match": "poison",
            "deltas": ["fine ", "still fine ", f"{POISON} ", "never stored"],
            "delta_delay": 0.02,
        },
    ],
    "responses": [{"deltas": [f"w{i} " for i in range(8)], "delta_delay": 0.02}],
}


def store_file(service: RunService) -> Path:
    return service.settings.home / "agentstage.db"


def execute(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)


def refusal(name: str, writes: str, when: str, reason: str) -> str:
    """A real trigger: the database refuses ``writes`` (``INSERT ON runs``) ``when`` a condition on
    the new row holds, with ``reason`` as its error."""
    return f"CREATE TRIGGER {name} BEFORE {writes} WHEN {when} BEGIN SELECT RAISE(ABORT, '{reason}'); END"


def gap_free(events: Sequence[RunEvent]) -> bool:
    return [e.seq for e in events] == list(range(1, len(events) + 1))


class BatchLog:
    """An event sink that remembers which runs each committed batch held."""

    def __init__(self) -> None:
        self.batches: list[set[str]] = []

    def deliver(self, events: Sequence[RunEvent]) -> None:
        self.batches.append({e.run_id for e in events})


@pytest.mark.sqlite_only  # reads or poisons the SQLite file itself
async def test_rows_the_store_refuses_fail_only_their_own_run(
    make_service: Callable[..., RunService],
) -> None:
    async with make_service(STREAMING) as service:
        execute(
            store_file(service),
            refusal("poison", "INSERT ON run_events", f"instr(NEW.data, '{POISON}') > 0", "injected fault"),
        )
        batches = BatchLog()
        service.add_sink(batches)
        healthy = [await service.start(RunRequest(input=f"hello {i}", mode="chat")) for i in range(30)]
        poisoned = await service.start(RunRequest(input="poison me", mode="chat"))
        finals = await asyncio.gather(*(service.wait(r.id) for r in [*healthy, poisoned]))
        logs = {r.id: await service.events(r.id) for r in finals}
        reference = [e.type for e in logs[healthy[0].id]]

    *others, bad = finals
    assert bad.status == "failed" and bad.error_code == "store_write_failed"
    assert "injected fault" in (bad.error_message or "")
    bad_log = logs[bad.id]
    assert gap_free(bad_log) and bad_log[-1].type == "run.failed"
    assert bad_log[-1].data["error"]["code"] == "store_write_failed"
    assert all(POISON not in e.data_json for e in bad_log)
    assert [e.type for e in bad_log].count("message.delta") <= 2  # kept up to the failure, nothing after
    for record in others:
        assert record.status == "completed" and record.output == "".join(f"w{i} " for i in range(8))
        assert gap_free(logs[record.id]) and [e.type for e in logs[record.id]] == reference
    assert any(len(runs) > 1 for runs in batches.batches), "runs should share commits"


@pytest.mark.sqlite_only  # reads or poisons the SQLite file itself
async def test_an_ending_the_store_cannot_take_is_reported_then_repaired(
    make_service: Callable[..., RunService],
) -> None:
    slow = {"responses": [{"deltas": [f"w{i} " for i in range(40)], "delta_delay": 0.05}]}
    async with make_service(slow, runtime={"heartbeat_interval": 0.1}) as service:
        path = store_file(service)
        execute(
            path,
            "CREATE TABLE doomed (id TEXT)",
            refusal(
                "refuse",
                "INSERT ON run_events",
                "NEW.run_id IN (SELECT id FROM doomed)",
                "refused for this run",
            ),
        )
        record = await service.start(RunRequest(input="go", mode="chat"))
        seen: list[RunEvent] = []

        async def follow() -> None:
            async for event in service.stream(record.id):
                seen.append(event)
                if event.type == "message.delta" and len(seen) == 6:
                    execute(path, f"INSERT INTO doomed VALUES ('{record.id}')")

        with pytest.raises(StoreError) as streamed:
            await follow()
        with pytest.raises(StoreError) as waited:
            await service.wait(record.id)
        assert streamed.value.code == waited.value.code == "store_write_failed"
        assert (await service.status(record.id)).status == "running"  # what the store holds, for now
        execute(path, "DELETE FROM doomed")
        for _ in range(100):
            repaired = await service.status(record.id)
            if repaired.status.terminal:
                break
            await asyncio.sleep(0.05)
        events = await service.events(record.id)
    assert repaired.status == "failed" and repaired.error_code == "store_write_failed"
    assert gap_free(events) and events[-1].type == "run.failed"
    assert [e.seq for e in events[: len(seen)]] == [e.seq for e in seen]


async def test_a_slow_or_broken_sink_never_slows_or_fails_a_run(
    make_service: Callable[..., RunService],
) -> None:
    delivered: list[int] = []
    release = asyncio.Event()

    async def stuck(events: Sequence[RunEvent]) -> None:
        delivered.append(len(events))
        await release.wait()

    async def broken(events: Sequence[RunEvent]) -> None:
        raise RuntimeError("this sink is broken")

    slow_sink = QueuedSink("slow", stuck, max_pending=2)
    broken_sink = QueuedSink("broken", broken)
    async with make_service(STREAMING) as service:
        service.add_sink(slow_sink)
        service.add_sink(broken_sink)
        finals = [await service.run(RunRequest(input=f"hello {i}", mode="chat")) for i in range(5)]
        assert all(f.status == "completed" for f in finals)
        assert len(delivered) == 1 and slow_sink.dropped > 0  # the stuck consumer got one batch
        await asyncio.sleep(0.05)
        assert broken_sink.failures > 0 and broken_sink.dropped == 0
        release.set()
        await slow_sink.aclose()
        await broken_sink.aclose()


async def test_two_messages_at_once_to_one_conversation_are_both_kept_in_order(
    make_service: Callable[..., RunService],
) -> None:
    from agentstage.runtime.conversations import ConversationService

    script: dict[str, Any] = {
        "rules": [
            {"match": "first question", "text": "first answer"},
            {"match": "second", "text": "second answer"},
        ]
    }
    async with make_service(script) as service:
        conversations = ConversationService(service)
        conversation = await conversations.create()
        runs = await asyncio.gather(
            conversations.send(conversation.id, "first question", mode="chat"),
            conversations.send(conversation.id, "second question", mode="chat"),
        )
        finals = sorted([await service.wait(r.id) for r in runs], key=lambda r: r.started_at or r.created_at)
        history = await conversations.history(conversation.id)
        later_prompt = next(e for e in await service.events(finals[1].id) if e.type == "model.request")
    assert [f.status for f in finals] == ["completed", "completed"]
    assert finals[0].finished_at is not None and finals[1].started_at is not None
    assert finals[0].finished_at <= finals[1].started_at  # one after the other, never at the same time
    first, second = (f.input for f in finals)
    answer = {"first question": "first answer", "second question": "second answer"}
    assert [(m.position, m.role, m.content) for m in history] == [
        (0, "user", first),
        (1, "assistant", answer[first]),
        (2, "user", second),
        (3, "assistant", answer[second]),
    ]
    messages = [m["content"] for m in later_prompt.data["messages"]]
    assert messages[-3:] == [first, answer[first], second]  # the later run saw the earlier exchange


TOOL_RUN = {
    "responses": [
        {"tool_calls": [{"name": "math.calculate", "arguments": {"expression": "6*7"}}]},
        {"text": "The answer is 42."},
    ]
}


async def refuse_tool_results_of_doomed_runs(service: RunService) -> None:
    """A real trigger, on SQLite or PostgreSQL, refusing the ``tool.result`` rows of runs whose
    input says "doomed"."""
    async with service.store.engine.begin() as connection:  # type: ignore[attr-defined]
        found = (
            "instr(input, 'doomed')" if connection.dialect.name == "sqlite" else "position('doomed' in input)"
        )
        condition = f"NEW.type = 'tool.result' AND NEW.run_id IN (SELECT id FROM runs WHERE {found} > 0)"
        if connection.dialect.name == "sqlite":
            await connection.exec_driver_sql(
                refusal("refuse_result", "INSERT ON run_events", condition, "no result for this run")
            )
            return
        await connection.exec_driver_sql(
            "CREATE FUNCTION refuse_result() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF {condition} THEN RAISE EXCEPTION 'no result for this run'; END IF; RETURN NEW; END $$"
        )
        await connection.exec_driver_sql(
            "CREATE TRIGGER refuse_result BEFORE INSERT ON run_events FOR EACH ROW EXECUTE FUNCTION refuse_result()"
        )


async def test_a_refused_row_keeps_the_events_before_it_even_in_the_same_commit(
    make_service: Callable[..., RunService],
) -> None:
    """The tool's result is refused; the model's answer and the tool call, committed with it, are
    still in the log: it shows the run up to the failure, then its failure."""
    async with make_service(TOOL_RUN) as service:
        await refuse_tool_results_of_doomed_runs(service)
        batches = BatchLog()
        service.add_sink(batches)
        started = [
            await service.start(RunRequest(input=f"what is 6*7? ({i})", mode="react")) for i in range(10)
        ]
        doomed = await service.start(RunRequest(input="a doomed 6*7", mode="react"))
        finals = await asyncio.gather(*(service.wait(r.id) for r in [*started, doomed]))
        logs = {r.id: await service.events(r.id) for r in finals}
    *others, bad = finals
    reference = [e.type for e in logs[others[0].id]]
    assert all(r.status == "completed" and [e.type for e in logs[r.id]] == reference for r in others)
    assert bad.status == "failed" and "no result for this run" in (bad.error_message or "")
    bad_log = logs[bad.id]
    assert gap_free(bad_log) and bad_log[-1].type == "run.failed"
    assert [e.type for e in bad_log[:-1]] == reference[: reference.index("tool.result")], bad_log
    assert "tool.call" in reference[: reference.index("tool.result")]
    delivered = sum(1 for batch in batches.batches if bad.id in batch)
    assert delivered >= 1  # the kept events reached the sinks like any committed ones


@pytest.mark.sqlite_only  # poisons the SQLite file itself
async def test_a_refused_final_record_fails_that_run_alone_with_its_log_gap_free(
    make_service: Callable[..., RunService],
) -> None:
    """The refusal hits the run's last commit (its ending and last events), not an event row."""
    async with make_service(STREAMING) as service:
        execute(
            store_file(service),
            refusal(
                "refuse_end",
                "UPDATE ON runs",
                "NEW.status = 'completed' AND instr(NEW.input, 'doomed') > 0",
                "no ending for this run",
            ),
        )
        healthy = [await service.start(RunRequest(input=f"hello {i}", mode="chat")) for i in range(20)]
        doomed = await service.start(RunRequest(input="a doomed run", mode="chat"))
        finals = await asyncio.gather(*(service.wait(r.id) for r in [*healthy, doomed]))
        stored = {r.id: await service.status(r.id) for r in finals}
        log = await service.events(doomed.id)
    *others, bad = finals
    assert bad.status == "failed" and bad.error_code == "store_write_failed"
    assert "no ending for this run" in (bad.error_message or "")
    assert stored[bad.id].status == "failed"  # what wait() said is what the store holds
    assert gap_free(log) and log[-1].type == "run.failed"
    assert all(e.type != "run.completed" for e in log)
    # Only its record was refused: every event before its ending is kept, all eight words.
    assert [e.data["text"] for e in log if e.type == "message.delta"] == [f"w{i} " for i in range(8)]
    assert all(stored[r.id].status == "completed" for r in others)


@pytest.mark.sqlite_only  # poisons the SQLite file itself
async def test_a_run_the_store_refuses_to_create_is_refused_at_start_and_no_other_run_is(
    make_service: Callable[..., RunService],
) -> None:
    async with make_service(STREAMING) as service:
        execute(
            store_file(service),
            refusal("refuse_run", "INSERT ON runs", "instr(NEW.input, 'doomed') > 0", "no such run here"),
        )

        async def start(text: str) -> RunRecord:
            return await service.start(RunRequest(input=text, mode="chat"))

        started = await asyncio.gather(
            *(start(f"hello {i}") for i in range(10)),
            start("doomed"),
            *(start(f"hi {i}") for i in range(10)),
            return_exceptions=True,
        )
        refused = started.pop(10)
        finals = [await service.wait(r.id) for r in started if isinstance(r, RunRecord)]
        total = await service.count_runs()
    assert isinstance(refused, StoreError) and refused.code == "store_write_failed"
    assert "no such run here" in refused.message
    assert len(finals) == 20 and all(f.status == "completed" for f in finals)
    assert total == 20  # nothing was left behind for the refused one


@pytest.mark.sqlite_only  # poisons the SQLite file itself
async def test_a_refused_message_fails_its_run_and_leaves_its_conversation_usable(
    make_service: Callable[..., RunService],
) -> None:
    from agentstage.runtime.conversations import ConversationService

    async with make_service({"responses": [{"text": "an answer"}]}) as service:
        execute(
            store_file(service),
            refusal(
                "refuse_message",
                "INSERT ON conversation_messages",
                "instr(NEW.content, 'doomed') > 0",
                "no message here",
            ),
        )
        conversations = ConversationService(service)
        first, second = await conversations.create(), await conversations.create()
        runs = await asyncio.gather(
            conversations.send(first.id, "a doomed question", mode="chat"),
            conversations.send(second.id, "a fine question", mode="chat"),
        )
        bad, good = [await service.wait(r.id) for r in runs]
        first_history = await conversations.history(first.id)
        second_history = await conversations.history(second.id)
        again = await service.wait((await conversations.send(first.id, "once more", mode="chat")).id)
        after = await conversations.history(first.id)
    assert bad.status == "failed" and bad.error_code == "store_write_failed"
    assert good.status == "completed"
    assert first_history == []  # the failed turn left no half of itself
    assert [(m.position, m.content) for m in second_history] == [(0, "a fine question"), (1, "an answer")]
    assert again.status == "completed"
    assert [(m.position, m.content) for m in after] == [(0, "once more"), (1, "an answer")]
