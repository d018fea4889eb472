"""Rate limits shared by every process serving one store: per key, per tenant, per client address.

Each limit is a token bucket kept in the store, so ``--workers 4`` allows what one worker allows.
A process takes tokens in small leases (at most about a second's worth of the rate, and exactly
what it needs for slow limits), so a fast limit costs one store round trip per lease rather than
per request, and a slow one (``--rate 5``) is exact. Leases are never more than the bucket held:
the sum admitted by all workers never exceeds the limit.

When the store cannot be reached (locked by another process, out of disk), limits are kept by this
process alone for a few seconds instead of making every request wait on the store: a request is
then answered at once (a new run gets 503 or 507 from the run service) rather than after a lock's
timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("agentstage.access")
LEASE_SECONDS = 1.0
STORE_RETRY_SECONDS = 5.0


class LimitStore(Protocol):
    async def take_tokens(
        self, identity: str, capacity: float, per_second: float, need: int, extra: int, now: float
    ) -> tuple[int, float]: ...


@dataclass
class Lease:
    tokens: int
    expires: float
    per_minute: int


class RateLimiter:
    def __init__(self, store: LimitStore, max_leases: int = 10_000):
        self.store = store
        self.max_leases = max_leases
        self._leases: dict[str, Lease] = {}
        self._local: dict[
            str, tuple[float, float]
        ] = {}  # identity -> (tokens, at): used while the store is down
        self._store_down_until = 0.0
        self._renewing: dict[str, asyncio.Lock] = {}

    async def take(self, identity: str, per_minute: int, count: int = 1) -> float:
        """Take ``count`` tokens; 0 when allowed, else the seconds to wait (nothing taken)."""
        if self._from_lease(identity, per_minute, count):
            return 0.0
        # One renewal per identity at a time: requests that find the lease spent while another is
        # renewing it wait for that lease instead of each taking a lease of their own (which
        # would drain the shared bucket many times faster than the requests use it).
        if len(self._renewing) >= self.max_leases:
            self._renewing.clear()
        async with self._renewing.setdefault(identity, asyncio.Lock()):
            if self._from_lease(identity, per_minute, count):
                return 0.0
            return await self._renew(identity, per_minute, count)

    def _from_lease(self, identity: str, per_minute: int, count: int) -> bool:
        lease = self._leases.get(identity)
        if lease is None or lease.expires <= time.monotonic() or lease.per_minute != per_minute:
            return False
        if lease.tokens < count:
            return False
        lease.tokens -= count
        return True

    async def _renew(self, identity: str, per_minute: int, count: int) -> float:
        now = time.monotonic()
        extra = per_minute // 60 if per_minute >= 120 else 0
        if now < self._store_down_until:
            return self._take_locally(identity, per_minute, count, now)
        try:
            granted, wait = await self.store.take_tokens(
                identity, float(per_minute), per_minute / 60.0, count, extra, time.time()
            )
        except Exception as error:  # the store is locked or gone: keep limits here for a while
            log.warning(
                "rate limits are kept per process for %.0fs: the store failed (%s)",
                STORE_RETRY_SECONDS,
                error,
            )
            self._store_down_until = now + STORE_RETRY_SECONDS
            return self._take_locally(identity, per_minute, count, now)
        if granted < count:
            return wait if math.isfinite(wait) else float(60 * count)
        if len(self._leases) >= self.max_leases:
            self._leases.clear()
        self._leases[identity] = Lease(granted - count, now + LEASE_SECONDS, per_minute)
        return 0.0

    def _take_locally(self, identity: str, per_minute: int, count: int, now: float) -> float:
        tokens, at = self._local.get(identity, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - at) * per_minute / 60.0)
        if tokens < count:
            self._local[identity] = (tokens, now)
            return (count - tokens) * 60.0 / per_minute
        if len(self._local) >= self.max_leases:
            self._local.clear()
        self._local[identity] = (tokens - count, now)
        return 0.0

    def blocked(self, identity: str) -> bool:
        """Whether this process saw the bucket empty within the last lease (no store round trip)."""
        lease = self._leases.get(identity)
        return lease is not None and lease.tokens < 0 and lease.expires > time.monotonic()

    def mark_blocked(self, identity: str, seconds: float, per_minute: int) -> None:
        self._leases[identity] = Lease(-1, time.monotonic() + min(seconds, 60.0), per_minute)
