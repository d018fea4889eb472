"""Rate-limit leases under concurrency: requests that arrive together while a lease is renewed
share one renewal, so the shared bucket drains at the rate requests use it, not a multiple."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agentstage.access.limits import RateLimiter
from agentstage.store.sql import SqlRunStore

pytestmark = pytest.mark.anyio


async def test_concurrent_requests_share_one_lease_renewal(tmp_path: Path) -> None:
    store = SqlRunStore(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    await store.open()
    try:
        limiter = RateLimiter(store)
        waits = await asyncio.gather(*(limiter.take("key:k", 600) for _ in range(16)))
        assert waits == [0.0] * 16
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        (tokens,) = db.execute("SELECT tokens FROM rate_limits WHERE identity = 'key:k'").fetchone()
    # 16 requests at 600/min: leases of 1 + 10 tokens each, two renewals at most — not sixteen.
    assert tokens >= 600 - 2 * 11 - 1
