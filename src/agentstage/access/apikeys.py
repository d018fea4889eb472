"""API key verification: a bounded LRU cache in front of the store.

A key is ``ags_<43 url-safe characters>``, stored only as its SHA-256. Verified keys are cached for
half a second, so a revocation or rotation made by any process (``agent keys revoke`` on the
host, another worker) reaches every worker within a second; unknown keys are remembered for two
seconds only, and the whole cache is bounded, so forged keys cannot grow memory.

When a cached key goes stale, the first request to notice re-reads it and every request that
arrives meanwhile waits for that one read: a busy key costs one store query per half second per
process, however many requests are in flight (without this, every connection re-read the key at
once — a query and often a new pooled connection each).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Protocol

from agentstage.core.events import utc_now
from agentstage.core.records import ApiKeyRecord
from agentstage.errors import UnauthorizedError

KEY_PREFIX = "ags_"
KNOWN_SECONDS = 0.5
UNKNOWN_SECONDS = 2.0
TOUCH_EVERY = timedelta(seconds=60)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyStore(Protocol):
    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def touch_api_key(self, key_id: str, at: datetime) -> None: ...


class KeyVerifier:
    def __init__(self, store: KeyStore, max_entries: int = 10_000):
        self.store = store
        self.max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, ApiKeyRecord | None]] = OrderedDict()
        self._touched: dict[str, datetime] = {}
        self._reading: dict[str, asyncio.Task[ApiKeyRecord | None]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    async def verify(self, key: str) -> ApiKeyRecord:
        """The key's record, or UnauthorizedError saying why not (unknown, revoked, expired)."""
        if not key.startswith(KEY_PREFIX) or len(key) > 256:
            raise UnauthorizedError("the API key is not valid (unknown or revoked)", code="unknown_key")
        record = await self._lookup(hash_key(key))
        if record is None:
            raise UnauthorizedError("the API key is not valid (unknown or revoked)", code="unknown_key")
        if record.revoked_at is not None:
            raise UnauthorizedError(f"the API key {record.name!r} has been revoked", code="key_revoked")
        now = utc_now()
        if record.expires_at is not None and record.expires_at <= now:
            raise UnauthorizedError(
                f"the API key {record.name!r} expired at {record.expires_at.isoformat()}", code="key_expired"
            )
        await self._touch(record, now)
        return record

    async def _lookup(self, digest: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None:
            stamp, record = cached
            if now - stamp < (KNOWN_SECONDS if record is not None else UNKNOWN_SECONDS):
                self._cache.move_to_end(digest)
                return record
        reading = self._reading.get(digest)
        if reading is None:  # the read is a task of its own: a caller that goes away does not cancel it
            reading = asyncio.get_running_loop().create_task(self._read(digest, now))
            self._reading[digest] = reading
            reading.add_done_callback(lambda task: self._read_done(digest, task))
        return await asyncio.shield(reading)

    async def _read(self, digest: str, now: float) -> ApiKeyRecord | None:
        record = await self.store.api_key_by_hash(digest)
        self._cache[digest] = (now, record)
        self._cache.move_to_end(digest)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return record

    def _read_done(self, digest: str, task: asyncio.Task[ApiKeyRecord | None]) -> None:
        if self._reading.get(digest) is task:
            del self._reading[digest]
        if not task.cancelled():
            task.exception()  # every waiter got it; this only marks it seen

    async def _touch(self, record: ApiKeyRecord, now: datetime) -> None:
        """Keep ``last_used_at`` to the minute without writing on every request."""
        last = self._touched.get(record.id) or record.last_used_at
        if last is None or now - last >= TOUCH_EVERY:
            self._touched[record.id] = now
            if len(self._touched) > self.max_entries:
                self._touched.clear()
            await self.store.touch_api_key(record.id, now)

    def forget(self) -> None:
        self._cache.clear()
