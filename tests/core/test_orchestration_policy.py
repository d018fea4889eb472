"""How runs judge their own steps, with the scripted provider as the model: repeated failures stop
early, failed tools fail the run, fragments are not answers, plans keep their numbers, and the
prompt is fitted to the model's context window."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService

pytestmark = pytest.mark.anyio


async def run(service: RunService, **fields: Any) -> tuple[Any, list[Any]]:
    final = await service.run(RunRequest.model_validate(fields))
    events = await service.events(final.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    return final, events


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


async def test_the_same_invalid_action_three_times_stops_the_run(
    make_service: Callable[..., RunService],
) -> None:
    script = {"native_tools": False, "responses": [{"text": "I think it is 4"}]}
    async with make_service(script) as service:
        final, events = await run(service, input="hello there", mode="react", options={"max_steps": 8})
    assert final.status == "failed" and final.error_code == "repeated_failure"
    assert final.error_message is not None and "3 times" in final.error_message
    assert "larger model" in final.error_message
    requests = of_type(events, "model.request")
    assert len(requests) == 3, "stopped early instead of running to max_steps"
    # The second repeat changed something: the model was told what it already tried, greedily.
    assert "already tried" in requests[2].data["messages"][-1]["content"]
    assert requests[2].data["params"]["temperature"] == 0.0


async def test_a_failing_call_is_not_run_again(make_service: Callable[..., RunService]) -> None:
    divide = {"tool_calls": [{"name": "math.calculate", "arguments": {"expression": "1/0"}}]}
    async with make_service({"responses": [divide]}) as service:
        final, events = await run(service, input="divide one by zero", mode="react")
    assert final.status == "failed" and final.error_code == "repeated_failure"
    assert final.error_message is not None and "division by zero" in final.error_message
    assert len(of_type(events, "tool.result")) == 1
    repeats = [
        e
        for e in of_type(events, "step.finished")
        if (e.data.get("error") or {}).get("code") == "repeated_call"
    ]
    assert len(repeats) == 1


async def test_a_run_whose_every_tool_failed_is_not_completed(
    make_service: Callable[..., RunService],
) -> None:
    script = {
        "responses": [
            {"tool_calls": [{"name": "sql.query", "arguments": {"query": "SELECT * FROM sales_table"}}]},
            {"tool_calls": [{"name": "sql.query", "arguments": {"query": "SELECT * FROM sales"}}]},
            {"text": "Sales were great."},
        ]
    }
    async with make_service(script) as service:
        final, _ = await run(service, input="summarize the sales", mode="react")
    assert final.status == "failed" and final.error_code == "tool_steps_failed"
    assert final.error_message is not None
    assert "2 of 2" in final.error_message and "no such table: sales_table" in final.error_message


async def test_a_plan_whose_every_tool_step_failed_is_not_completed(
    make_service: Callable[..., RunService],
) -> None:
    bad = {"description": "look it up", "tool": "sql.query", "arguments": {"query": "SELECT x FROM nowhere"}}
    worse = {"description": "and again", "tool": "sql.query", "arguments": {"query": "SELECT y FROM nowhere"}}
    script = {"native_tools": False, "responses": [{"json": {"steps": [bad, worse]}}, {"text": "All good."}]}
    async with make_service(script) as service:
        final, events = await run(service, input="look up sales then compare", mode="planner")
    assert final.status == "failed" and final.error_code == "tool_steps_failed"
    assert not of_type(events, "run.completed")


async def test_plan_steps_keep_their_numbers(make_service: Callable[..., RunService]) -> None:
    steps = [
        {"description": "multiply", "tool": "math.calculate", "arguments": {"expression": "6*7"}},
        {"description": "add", "tool": "math.calculate", "arguments": {"expression": "40+2"}},
    ]
    script = {"native_tools": True, "responses": [{"json": {"steps": steps}}, {"text": "Both are 42."}]}
    async with make_service(script) as service:
        final, events = await run(service, input="compute 6*7 then 40+2", mode="planner")
    assert final.status == "completed", final.error_message
    started = [(e.data["step_id"], e.data["kind"]) for e in of_type(events, "step.started")]
    assert started == [("plan", "plan"), ("1", "tool"), ("2", "tool"), ("answer", "synthesize")]


@pytest.mark.parametrize(
    ("reply", "finish"),
    [({"text": "  "}, None), ({"text": "The total is", "finish_reason": "length"}, "length")],
)
async def test_an_empty_or_cut_off_answer_fails_the_run(
    make_service: Callable[..., RunService], reply: dict[str, Any], finish: str | None
) -> None:
    async with make_service({"responses": [reply]}) as service:
        final, _ = await run(service, input="tell me about it", mode="react")
    assert final.status == "failed" and final.error_code == "incomplete_answer"
    assert final.error_message is not None and ("cut off" in final.error_message) == (finish == "length")


async def test_a_long_react_loop_is_fitted_to_the_context_window(
    make_service: Callable[..., RunService],
) -> None:
    """Each tool result is long; the scripted model refuses any request bigger than its window."""
    calls = [
        {
            "tool_calls": [
                {"name": "sql.query", "arguments": {"query": f"SELECT * FROM orders LIMIT {60 + n}"}}
            ]
        }
        for n in range(5)
    ]
    script = {"context_window": 1200, "responses": [*calls, {"text": "Done: lots of orders."}]}
    async with make_service(script) as service:
        final, events = await run(service, input="list the orders", mode="react", options={"max_steps": 8})
    assert final.status == "completed", final.error_message
    requests = of_type(events, "model.request")
    assert len(requests) == 6
    last = requests[-1].data["messages"]
    assert any("shortened to fit" in m["content"] or "left out to fit" in m["content"] for m in last)
    assert last[1]["content"] == "list the orders" or any(m["content"] == "list the orders" for m in last)


async def test_an_input_that_cannot_fit_fails_at_once(make_service: Callable[..., RunService]) -> None:
    script = {"context_window": 300, "responses": [{"text": "never said"}]}
    async with make_service(script) as service:
        final, events = await run(service, input="word " * 2000, mode="chat")
    assert final.status == "failed" and final.error_code == "context_overflow"
    assert final.error_message is not None
    assert "300 tokens" in final.error_message and "10000 characters" in final.error_message
    assert not of_type(events, "model.request"), "no model call was attempted"
