"""Reject-mode admission is one step in the store: many runs of one tenant started at the same
moment on two services sharing a store (two API nodes) are admitted exactly up to the limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from agentstage.errors import TooManyRequestsError
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService

pytestmark = pytest.mark.anyio

SLOW = {"responses": [{"text": "slow", "delay": 30.0}]}


async def test_simultaneous_admissions_on_two_nodes_never_pass_the_limit(
    make_service: Callable[..., RunService],
) -> None:
    runtime = {"tenant_limits": {"small": 3}, "tenant_overflow": "reject"}
    async with make_service(SLOW, runtime=runtime) as a, make_service(SLOW, runtime=runtime) as b:
        nodes = [a, b] * 10
        answers = await asyncio.gather(
            *(
                node.start(RunRequest(input=f"work {i}", mode="chat", tenant="small"))
                for i, node in enumerate(nodes)
            ),
            return_exceptions=True,
        )
        admitted = [answer for answer in answers if not isinstance(answer, BaseException)]
        refused = [answer for answer in answers if isinstance(answer, BaseException)]
        assert len(admitted) == 3, answers
        assert all(
            isinstance(error, TooManyRequestsError) and error.code == "tenant_limit" for error in refused
        )
        assert await a.count_runs(tenant="small") == 3  # a refused run leaves nothing behind
        for run in admitted:
            await a.cancel(run.id)
            assert (await a.wait(run.id)).status == "cancelled"
        again = await b.start(RunRequest(input="again", mode="chat", tenant="small"))  # slots free again
        await b.cancel(again.id)
        await b.wait(again.id)
