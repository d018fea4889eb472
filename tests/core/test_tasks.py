"""Stopping a background task: the task's cancellation is absorbed, the caller's is not."""

from __future__ import annotations

import asyncio

import pytest

from agentstage.core.tasks import stop_task

pytestmark = pytest.mark.anyio


async def _slow_to_stop(stopped: list[str], seconds: float = 0.2) -> None:
    """Works until cancelled, then takes ``seconds`` to clean up (a flush, a connection close)."""
    try:
        await asyncio.sleep(3600)
    finally:
        await asyncio.shield(asyncio.sleep(seconds))
        stopped.append("cleaned up")


async def test_the_task_is_stopped_and_its_cleanup_has_run_when_it_returns() -> None:
    stopped: list[str] = []
    task = asyncio.create_task(_slow_to_stop(stopped, 0.05))
    await asyncio.sleep(0)
    await stop_task(task)
    assert task.cancelled()
    assert stopped == ["cleaned up"]


async def test_a_deadline_on_the_caller_still_fires_while_it_waits() -> None:
    """The suppress idiom swallows the caller's own cancellation: the deadline would be lost and
    the code after the wait would run as if it had been met."""
    stopped: list[str] = []
    task = asyncio.create_task(_slow_to_stop(stopped))
    await asyncio.sleep(0)
    went_on = False
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await stop_task(task)
            went_on = True
    assert not went_on
    assert task.done()  # the deadline cut the task's cleanup too; nothing is left running
    assert stopped == []


async def test_a_caller_cancelled_while_the_task_swallows_its_own_cancellation_is_still_cancelled() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await release.wait()
                return
            except asyncio.CancelledError:
                continue  # ignores every cancellation (what a careless tool does)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    caller = asyncio.create_task(stop_task(task))
    await asyncio.sleep(0.01)
    caller.cancel()
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert task.done() and not task.cancelled()


async def test_cleanup_in_a_finally_after_a_cancellation_goes_on_to_the_end() -> None:
    """Ctrl-C cancels the main task; its ``finally`` stops the helpers and must reach the last
    step: the cancellation it runs under is not a new one."""
    stopped: list[str] = []
    steps: list[str] = []
    first = asyncio.create_task(_slow_to_stop(stopped, 0.01))
    second = asyncio.create_task(_slow_to_stop(stopped, 0.01))

    async def main() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await stop_task(first)
            steps.append("first stopped")
            await stop_task(second)
            steps.append("second stopped")

    runner = asyncio.create_task(main())
    await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert steps == ["first stopped", "second stopped"]
    assert stopped == ["cleaned up", "cleaned up"]


async def test_an_error_the_task_raised_is_raised_to_the_caller() -> None:
    async def broken() -> None:
        raise RuntimeError("the listener lost its connection")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="lost its connection"):
        await stop_task(task)


async def test_a_task_that_already_ended_is_simply_awaited() -> None:
    async def quick() -> None:
        return None

    task = asyncio.create_task(quick())
    await task
    await stop_task(task)
    assert task.done() and not task.cancelled()
