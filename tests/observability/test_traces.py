"""Spans kept in the store, built from a run's events: the tree of each orchestration mode, errors,
cancellations, tracing turned off — and read back with ``agent trace show`` and ``agent debug``
with nothing else running."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentstage.core.records import SpanRecord
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.traces import arrange
from agentstage.runtime.wiring import build_services
from conftest import Cli, make_settings, scripted_config

from .conftest import TOOL_THEN_ANSWER

pytestmark = pytest.mark.anyio


async def traced(
    home: Path, script: dict[str, Any], request: RunRequest, **extra: Any
) -> tuple[Any, list[SpanRecord]]:
    services = build_services(make_settings(home, scripted_config(script, **extra)))
    async with services.runs as service:
        record = await service.run(request)
        spans = await services.traces.spans(record.id)
    return record, spans


def names(spans: list[SpanRecord]) -> list[tuple[int, str]]:
    return [(depth, span.name) for root in arrange(spans) for depth, span in root.walk()]


async def test_a_react_run_is_kept_as_a_span_tree(home: Path) -> None:
    record, spans = await traced(home, TOOL_THEN_ANSWER, RunRequest(input="what is 6*7?", mode="react"))
    assert names(spans) == [
        (0, "invoke_agent react"),
        (1, "orchestration.select"),
        (1, "chat scripted-model"),
        (2, "llm.generate"),
        (2, "llm.parse"),
        (1, "streaming.aggregate"),  # from the first streamed chunk ("Let me compute.") to the last
        (1, "execute_tool math.calculate"),
        (2, "tool.validate"),
        (2, "tool.run"),
        (1, "chat scripted-model"),
        (2, "llm.generate"),
        (2, "llm.parse"),
    ]
    root = arrange(spans)[0].span
    assert root.trace_id == record.trace_id and root.parent_span_id is None
    assert root.attributes["agentstage.door"] == "sdk"  # started from Python, not through a door
    assert all(span.run_id == record.id and span.status == "unset" for span in spans)


async def test_the_planner_and_chat_modes_have_their_own_trees(home: Path) -> None:
    plan = {"steps": [{"description": "compute", "tool": "math.calculate", "arguments": {"expression": "2+2"}},
                      {"description": "explain"}]}  # fmt: skip
    script = {"responses": [{"json": plan}, {"text": "four"}, {"text": "The answer is 4."}]}
    _, spans = await traced(home, script, RunRequest(input="plan: what is 2+2?", mode="planner"))
    tree = names(spans)
    assert tree[0] == (0, "invoke_agent planner")
    assert [name for depth, name in tree if depth == 1] == [
        "orchestration.select", "chat scripted-model", "execute_tool math.calculate", "chat scripted-model",
        "chat scripted-model", "streaming.aggregate",
    ]  # fmt: skip
    root = arrange(spans)[0].span  # (a child may share the root's start time)
    assert root.events and root.events[0]["name"] == "plan.created"
    _, chat = await traced(
        home / "chat", {"responses": [{"text": "Hello."}]}, RunRequest(input="hi", mode="chat")
    )
    assert names(chat)[:3] == [
        (0, "invoke_agent chat"),
        (1, "orchestration.select"),
        (1, "chat scripted-model"),
    ]


async def test_a_retried_model_call_is_an_event_on_its_span_and_errors_are_counted_on_the_root(
    home: Path,
) -> None:
    script = {
        "responses": [
            {"error": {"code": "rate_limited", "message": "slow down", "retryable": True}},
            {"error": {"code": "model_error", "message": "gave up"}},
        ]
    }
    record, spans = await traced(home, script, RunRequest(input="hello", mode="chat"))
    assert record.status.value == "failed"
    root = next(s for s in spans if s.name.startswith("invoke_agent"))
    assert root.status == "error" and root.attributes["error.type"] == "model_error"
    chat = next(s for s in spans if s.name.startswith("chat"))
    assert chat.status == "error" and [e["name"] for e in chat.events] == ["model.retry"]
    assert chat.events[0]["attributes"]["error.type"] == "rate_limited"


async def test_a_cancelled_run_closes_its_open_spans(home: Path) -> None:
    slow = {"responses": [{"deltas": [f"w{i} " for i in range(200)], "delta_delay": 0.05}]}
    services = build_services(make_settings(home, scripted_config(slow)))
    async with services.runs as service:
        record = await service.start(RunRequest(input="talk slowly", mode="chat"))
        await asyncio.sleep(0.5)
        await service.cancel(record.id)
        record = await service.wait(record.id)
        spans = await services.traces.spans(record.id)
    root = next(s for s in spans if s.name.startswith("invoke_agent"))
    assert record.status.value == "cancelled" and root.attributes["agentstage.status"] == "cancelled"
    chat = next(s for s in spans if s.name.startswith("chat"))
    assert chat.end_ns <= root.end_ns and chat.attributes["error.type"] == "incomplete"


async def test_tracing_off_keeps_no_spans(home: Path) -> None:
    _, spans = await traced(
        home, TOOL_THEN_ANSWER, RunRequest(input="6*7", mode="react"), tracing={"enabled": False}
    )
    assert spans == []


async def test_another_tenants_trace_is_not_found(home: Path) -> None:
    from agentstage.errors import NotFoundError

    services = build_services(make_settings(home, scripted_config(TOOL_THEN_ANSWER)))
    async with services.runs as service:
        record = await service.run(RunRequest(input="6*7", mode="react", tenant="default"))
        with pytest.raises(NotFoundError):
            await services.traces.spans(record.id, tenant="someone-else")


def test_agent_trace_show_prints_the_tree_from_the_store(cli: Cli) -> None:
    cli.script(TOOL_THEN_ANSWER)
    ran = cli("run", "what is 6*7?", "--mode", "react", "--output", "json")
    run_id = json.loads(ran.stdout)["run_id"]
    shown = cli("trace", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert (
        lines[0].startswith("invoke_agent react")
        and "status=completed" in lines[0]
        and "door=cli" in lines[0]
    )
    for name in ("orchestration.select", "chat scripted-model", "llm.generate", "execute_tool math.calculate",
                 "tool.validate", "tool.run", "streaming.aggregate"):  # fmt: skip
        assert any(name in line for line in lines), name
    assert any("─ tool.run" in line for line in lines)  # drawn as a tree
    spans = json.loads(cli("trace", "show", run_id, "--json").stdout)
    assert len(spans) == 12 and {s["trace_id"] for s in spans} == {spans[0]["trace_id"]}
    missing = cli("trace", "show", "no-such-run")
    assert missing.returncode == 2 and "unknown run 'no-such-run'" in missing.stderr


def test_agent_debug_shows_the_tree_and_saves_logs_events_spans_and_snapshot(
    cli: Cli, tmp_path: Path
) -> None:
    # one call the tool refuses, then one it answers: the run completes with an error in its tree
    failing = {"responses": [{"tool_calls": [{"name": "math.calculate", "arguments": {"expression": 5}}]},
                             {"tool_calls": [{"name": "math.calculate", "arguments": {"expression": "5"}}]},
                             {"text": "I could not compute it."}]}  # fmt: skip
    cli.script(failing)
    saved = tmp_path / "debug"
    done = cli("debug", "compute 5", "--mode", "react", "--verbose", "--save-logs", str(saved))
    assert done.returncode == 0, done.stderr
    assert "I could not compute it." in done.stdout
    assert "execute_tool math.calculate" in done.stderr and "error=invalid_tool_arguments" in done.stderr
    assert "DEBUG step started" in done.stderr  # --verbose shows DEBUG lines as the run goes
    assert sorted(p.name for p in saved.iterdir()) == [
        "events.jsonl",
        "logs.jsonl",
        "snapshot.json",
        "spans.json",
    ]
    logs = [json.loads(line) for line in (saved / "logs.jsonl").read_text().splitlines()]
    run_id = next(line["run_id"] for line in logs if line["logger"] == "agentstage.run")
    step_lines = [
        line for line in logs if line["message"] in ("step started", "step finished", "step failed")
    ]
    assert step_lines and all(line["step_id"] and line["span_id"] and line["trace_id"] for line in step_lines)
    assert any(line["level"] == "WARN" and line["message"] == "tool failed" for line in logs)
    events = [json.loads(line) for line in (saved / "events.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)) and events[-1][
        "type"
    ] == "run.completed"
    spans = json.loads((saved / "spans.json").read_text())
    assert {s["run_id"] for s in spans} == {run_id} and spans[0]["name"] == "invoke_agent react"
    assert json.loads((saved / "snapshot.json").read_text())["run_id"] == run_id
    quiet = cli("debug", "compute 5", "--mode", "react")
    assert "DEBUG" not in quiet.stderr and "invoke_agent react" in quiet.stderr


def test_agent_debug_refuses_a_file_as_the_log_directory(cli: Cli, tmp_path: Path) -> None:
    cli.script(TOOL_THEN_ANSWER)
    (tmp_path / "file").write_text("x")
    done = cli("debug", "hi", "--save-logs", str(tmp_path / "file"))
    assert done.returncode == 2 and "is not a directory" in done.stderr


def test_cli_logs_follow_agent_log_level_and_format(cli: Cli) -> None:
    cli.script(TOOL_THEN_ANSWER)
    cli.env |= {"AGENT_LOG_LEVEL": "DEBUG", "AGENT_LOG_FORMAT": "json"}
    done = cli("run", "what is 6*7?", "--mode", "react")
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    messages = {line["message"] for line in lines}
    assert {"run started", "step started", "tool result", "run completed"} <= messages
    assert {line["level"] for line in lines} <= {"DEBUG", "INFO"}
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= set(line)
    # A run's own lines carry its ids; the process's lines (the store slowing down under load, say)
    # belong to no run and carry none.
    run_lines = [line for line in lines if line["logger"] == "agentstage.run"]
    assert len(run_lines) >= 4
    for line in run_lines:
        assert {"run_id", "trace_id", "span_id"} <= set(line)
    cli.env["AGENT_LOG_LEVEL"] = "warn"
    assert not [
        line for line in cli("run", "6*7", "--mode", "react").stderr.splitlines() if line.startswith("{")
    ]
    cli.env["AGENT_LOG_LEVEL"] = "loud"
    refused = cli("run", "6*7")
    assert refused.returncode == 2 and "logging.level" in refused.stderr
