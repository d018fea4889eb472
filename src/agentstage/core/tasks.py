"""Stopping a background task from the code that owns it.

``task.cancel()`` followed by ``with suppress(CancelledError): await task`` is the usual idiom, and
it has a flaw: the ``CancelledError`` it suppresses may be the *caller's*. When the caller is
cancelled while it waits (a shutdown deadline, ``asyncio.timeout``, a second Ctrl-C), the idiom
swallows that cancellation and the caller carries on as if nothing had happened, so the deadline
never fires. :func:`stop_task` tells the two apart by the caller's own count of cancellation
requests: the task's ending is absorbed, a new request for the caller goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def stop_task(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (see :func:`wait_stopped`)."""
    task.cancel()
    await wait_stopped(task)


async def wait_stopped(task: asyncio.Future[Any]) -> None:
    """Wait until ``task``, already asked to stop, has ended.

    The task's cancellation is expected and absorbed; an error it raised instead is raised here. A
    cancellation of the caller that arrives during the wait reaches the task too (as with any
    ``await``), and is raised once the task has ended: nothing is left running behind the caller.
    A cancellation already under way when this is called (cleanup in a ``finally`` after Ctrl-C)
    is not new: the cleanup goes on."""
    current = asyncio.current_task()
    requests_before = current.cancelling() if current is not None else 0
    try:
        await task
    except asyncio.CancelledError:
        if _cancelled_meanwhile(current, requests_before):
            raise
    else:  # the task swallowed its cancellation, and with it the caller's, passed on to it
        if _cancelled_meanwhile(current, requests_before):
            raise asyncio.CancelledError


def _cancelled_meanwhile(current: asyncio.Task[Any] | None, requests_before: int) -> bool:
    return current is not None and current.cancelling() > requests_before
