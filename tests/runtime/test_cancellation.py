"""The cancellation contract: before start, during a model stream, during a slow tool, after the end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from agentstage.core.tools import ArgumentsTool, ToolContext
from agentstage.errors import ConflictError
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService

pytestmark = pytest.mark.anyio


class WaitArguments(BaseModel):
    seconds: float


class SlowTool(ArgumentsTool):
    """Waits, but stops as soon as its context says the run was cancelled."""

    name: ClassVar[str] = "test.wait"
    description: ClassVar[str] = "Wait for a while."
    Arguments = WaitArguments

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.saw_cancel = False

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        self.started.set()
        try:
            await asyncio.wait_for(context.cancelled.wait(), arguments["seconds"])
        except TimeoutError:
            return "waited"
        finally:
            self.saw_cancel = context.is_cancelled
        return "stopped early"


async def first_event(service: RunService, run_id: str, event_type: str) -> None:
    async for event in service.stream(run_id):
        if event.type == event_type:
            return


async def test_cancel_before_start_means_it_never_starts(make_service: Callable[..., RunService]) -> None:
    async with make_service(
        {"responses": [{"text": "slow", "delay": 1.0}]}, runtime={"max_concurrent_runs": 1}
    ) as service:
        blocker = await service.start(RunRequest(input="first", mode="chat"))
        queued = await service.start(RunRequest(input="second", mode="chat"))
        assert (await service.status(queued.id)).status == "queued"
        await service.cancel(queued.id)
        await service.cancel(queued.id)  # idempotent
        final = await service.wait(queued.id)
        events = await service.events(queued.id)
        await service.cancel(blocker.id)
    assert final.status == "cancelled"
    assert [e.type for e in events] == ["run.queued", "run.cancelled"]
    assert final.started_at is None


async def test_cancel_during_a_model_stream_keeps_the_partial_output(
    make_service: Callable[..., RunService],
) -> None:
    script = {"responses": [{"deltas": ["one ", "two ", "three ", "four ", "five"], "delta_delay": 0.3}]}
    async with make_service(script) as service:
        record = await service.start(RunRequest(input="count", mode="chat"))
        seen = []
        async for event in service.stream(record.id):
            seen.append(event)
            if event.type == "message.delta" and event.data["text"] == "two ":
                await service.cancel(record.id, reason="enough")
        final = await service.wait(record.id)
    assert final.status == "cancelled"
    last = seen[-1]
    assert last.type == "run.cancelled"
    assert last.data["reason"] == "enough"
    assert last.data["partial_output"].startswith("one two")
    assert "five" not in last.data["partial_output"]
    assert final.output == last.data["partial_output"]
    assert "model.response" not in [e.type for e in seen]


async def test_cancel_during_a_slow_tool_reaches_the_tool(make_service: Callable[..., RunService]) -> None:
    script = {
        "responses": [
            {
                "tool_calls": [{"name": "test.wait", "arguments": {"seconds": 30}}],
                "usage": {"input_tokens": 7, "output_tokens": 3},
            },
            {"text": "never reached"},
        ]
    }
    async with make_service(script) as service:
        tool = SlowTool()
        service.catalog.register(tool)
        record = await service.start(RunRequest(input="wait please", mode="react"))
        await asyncio.wait_for(tool.started.wait(), 10)
        await service.cancel(record.id)
        final = await asyncio.wait_for(service.wait(record.id), 10)
        events = await service.events(record.id)
    assert tool.saw_cancel is True
    assert final.status == "cancelled"
    assert events[-1].type == "run.cancelled"
    assert events[-1].data["usage"]["input_tokens"] == 7
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_cancel_after_completion_changes_nothing(chat_service: RunService) -> None:
    final = await chat_service.run(RunRequest(input="hi", mode="chat"))
    with pytest.raises(ConflictError) as raised:
        await chat_service.cancel(final.id)
    assert raised.value.code == "run_finished"
    assert raised.value.details == {"run_status": "completed"}
    after = await chat_service.status(final.id)
    assert after.status == "completed" and after.last_seq == final.last_seq
    assert (await chat_service.events(final.id))[-1].type == "run.completed"
