"""API keys: made here, shown once, stored only as a SHA-256 hash.

A key looks like ``ags_<43 url-safe characters>``; its first characters (the prefix) are kept in
clear so a user can tell keys apart in ``agent keys list`` without the store holding the secret.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from uuid6 import uuid7

from agentstage.core.events import utc_now
from agentstage.core.records import ApiKeyRecord
from agentstage.errors import ConflictError, InvalidInputError, NotFoundError
from agentstage.store.base import RunStore

KEY_PREFIX = "ags_"
CACHE_SECONDS = 30.0


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyService:
    def __init__(self, store: RunStore):
        self.store = store
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}

    async def create(self, name: str, requests_per_minute: int | None = None) -> tuple[str, ApiKeyRecord]:
        """Return the new key (its only appearance in clear) and its stored record."""
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidInputError("a key needs a name of 1 to 128 characters", code="invalid_key_name")
        if requests_per_minute is not None and requests_per_minute < 1:
            raise InvalidInputError("requests_per_minute must be at least 1", code="invalid_rate_limit")
        if any(existing.name == name for existing in await self.store.list_api_keys()):
            raise ConflictError(f"a key named {name!r} already exists", code="key_exists")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKeyRecord(
            id=str(uuid7()),
            name=name,
            prefix=key[:10],
            key_hash=hash_key(key),
            requests_per_minute=requests_per_minute,
            created_at=utc_now(),
        )
        await self.store.create_api_key(record)
        return key, record

    async def verify(self, key: str) -> ApiKeyRecord | None:
        """The key's record if it exists and is not revoked (cached briefly: this runs per request)."""
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        record = await self.store.api_key_by_hash(digest)
        if record is not None and record.revoked_at is not None:
            record = None
        self._cache[digest] = (now, record)
        return record

    async def list_keys(self) -> list[ApiKeyRecord]:
        return await self.store.list_api_keys()

    async def revoke(self, name: str) -> None:
        if not await self.store.revoke_api_key(name, utc_now()):
            raise NotFoundError(f"no active key named {name!r}", code="key_not_found")
        self._cache.clear()
