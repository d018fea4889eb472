"""Waiting for a conversation's turn or a tenant's slot: whoever stops waiting holds nothing."""

from __future__ import annotations

import asyncio

import pytest

from agentstage.runtime.service import _acquire_unless

pytestmark = pytest.mark.anyio


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize("kind", ["lock", "semaphore"])
async def test_a_waiter_cancelled_before_its_turn_holds_nothing_once_the_turn_comes(kind: str) -> None:
    lock: asyncio.Lock | asyncio.Semaphore = asyncio.Lock() if kind == "lock" else asyncio.Semaphore(1)
    await lock.acquire()  # the run ahead of it
    waiter = asyncio.create_task(_acquire_unless(lock, asyncio.Event()))
    await settle()
    waiter.cancel()
    await settle()
    lock.release()  # the run ahead ends just as the waiter's caller went away
    await settle()
    assert waiter.cancelled()
    assert not lock.locked(), "the cancelled waiter kept the turn: the conversation would hang"
    assert await asyncio.wait_for(_acquire_unless(lock, asyncio.Event()), 1)


async def test_a_waiter_cancelled_as_its_turn_comes_gives_it_back() -> None:
    lock = asyncio.Lock()
    await lock.acquire()
    waiter = asyncio.create_task(_acquire_unless(lock, asyncio.Event()))
    await settle()
    lock.release()  # the turn is handed to the waiter's acquisition...
    waiter.cancel()  # ...in the same loop turn as its caller is cancelled
    await settle()
    assert waiter.cancelled()
    assert not lock.locked()


async def test_a_stopped_waiter_returns_without_the_turn_and_the_turn_stays_with_its_holder() -> None:
    lock = asyncio.Lock()
    await lock.acquire()
    stop = asyncio.Event()
    waiter = asyncio.create_task(_acquire_unless(lock, stop))
    await settle()
    stop.set()
    assert await asyncio.wait_for(waiter, 1) is False
    assert lock.locked()  # still the holder's
    lock.release()
    await settle()
    assert not lock.locked()


async def test_a_waiter_gets_the_turn_when_it_comes() -> None:
    lock = asyncio.Lock()
    await lock.acquire()
    waiter = asyncio.create_task(_acquire_unless(lock, asyncio.Event()))
    await settle()
    lock.release()
    assert await asyncio.wait_for(waiter, 1) is True
    assert lock.locked()
