"""Per-tenant concurrent-run limits at admission, counted in the store, so they hold across every
process sharing it (two services on one store stand for two API nodes)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from agentstage.errors import TooManyRequestsError
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService

pytestmark = pytest.mark.anyio

SLOW = {"responses": [{"text": "slow", "delay": 30.0}]}


def request(tenant: str) -> RunRequest:
    return RunRequest(input="work", mode="chat", tenant=tenant)


async def test_reject_refuses_a_tenant_over_its_limit_on_any_node(
    make_service: Callable[..., RunService],
) -> None:
    runtime = {"tenant_limits": {"small": 2}, "tenant_overflow": "reject"}
    async with make_service(SLOW, runtime=runtime) as a, make_service(SLOW, runtime=runtime) as b:
        first = await a.start(request("small"))
        second = await b.start(request("small"))
        for node in (a, b):
            with pytest.raises(TooManyRequestsError) as refused:
                await node.start(request("small"))
            assert refused.value.code == "tenant_limit" and refused.value.retry_after == 1.0
            assert "tenant 'small' already has 2 runs queued or running (its limit is 2)" in str(
                refused.value
            )
        other = await b.start(request("default"))  # other tenants are not affected
        await a.cancel(first.id)
        await a.wait(first.id)
        third = await b.start(request("small"))  # a slot is free again
        for node, run in ((a, second), (b, third), (b, other)):
            await node.cancel(run.id)
            assert (await node.wait(run.id)).status == "cancelled"


async def test_queue_lets_the_others_wait_their_turn(make_service: Callable[..., RunService]) -> None:
    runtime = {"tenant_limits": {"small": 1}, "tenant_overflow": "queue"}
    async with make_service({"responses": [{"text": "done", "delay": 0.3}]}, runtime=runtime) as service:
        runs = [await service.start(request("small")) for _ in range(3)]
        ended = [await service.wait(run.id) for run in runs]
        assert [record.status for record in ended] == ["completed"] * 3
        spans = []
        for record in ended:
            assert record.started_at is not None and record.finished_at is not None
            spans.append((record.started_at, record.finished_at))
        spans.sort()
        assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))
