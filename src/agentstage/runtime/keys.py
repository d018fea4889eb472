"""API keys: made here, shown once, stored only as a SHA-256 hash.

A key looks like ``ags_<43 url-safe characters>``; its first characters (the prefix) are kept in
clear so a user can tell keys apart in ``agent keys list`` without the store holding the secret.
Each key has a role, a tenant, optional scopes (a subset of the role's permissions), an optional
expiry and a rate limit. Revoking or rotating a key reaches every running worker within a second
(their verification caches hold a key for half a second).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta

from uuid6 import uuid7

from agentstage.access.apikeys import KEY_PREFIX, hash_key
from agentstage.access.permissions import PERMISSIONS, RoleTable
from agentstage.core.events import utc_now
from agentstage.core.records import ApiKeyRecord
from agentstage.errors import ConflictError, InvalidInputError, NotFoundError
from agentstage.settings import Settings
from agentstage.store.base import RunStore

__all__ = ["KEY_PREFIX", "KeyService", "hash_key", "parse_expiry"]

_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, now: datetime) -> datetime:
    """``90d``, ``12h``, ``2w``, ``30m`` from now, or an ISO 8601 date/time (UTC if no zone)."""
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = int(match[1]), _UNITS[match[2]]
        if amount == 0:
            raise InvalidInputError(f"--expires {text!r} is not in the future", code="invalid_expiry")
        return now + timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"--expires {text!r} is neither a duration (90d, 12h, 2w) nor an ISO date", code="invalid_expiry"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=now.tzinfo)
    if moment <= now:
        raise InvalidInputError(f"--expires {text!r} is not in the future", code="invalid_expiry")
    return moment


def new_secret() -> tuple[str, str, str]:
    """A fresh key, its stored hash and its shown prefix."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key), key[:10]


class KeyService:
    def __init__(self, store: RunStore, settings: Settings | None = None):
        self.store = store
        self.settings = settings

    async def create(
        self,
        name: str,
        requests_per_minute: int | None = None,
        *,
        role: str = "operator",
        tenant: str = "default",
        scopes: list[str] | None = None,
        expires: str | None = None,
    ) -> tuple[str, ApiKeyRecord]:
        """Return the new key (its only appearance in clear) and its stored record."""
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidInputError("a key needs a name of 1 to 128 characters", code="invalid_key_name")
        if requests_per_minute is not None and requests_per_minute < 1:
            raise InvalidInputError("requests_per_minute must be at least 1", code="invalid_rate_limit")
        self._check_role_and_tenant(role, tenant, scopes)
        if any(existing.name == name for existing in await self.store.list_api_keys()):
            raise ConflictError(f"a key named {name!r} already exists", code="key_exists")
        now = utc_now()
        key, digest, prefix = new_secret()
        record = ApiKeyRecord(
            id=str(uuid7()),
            name=name,
            prefix=prefix,
            key_hash=digest,
            requests_per_minute=requests_per_minute,
            created_at=now,
            role=role,
            tenant=tenant,
            scopes=sorted(set(scopes)) if scopes else None,
            expires_at=parse_expiry(expires, now) if expires else None,
        )
        await self.store.create_api_key(record)
        return key, record

    def _check_role_and_tenant(self, role: str, tenant: str, scopes: list[str] | None) -> None:
        security = self.settings.security if self.settings else None
        roles = RoleTable(security.roles if security else None)
        if role not in roles.roles:
            raise InvalidInputError(
                f"role {role!r} does not exist (roles: {', '.join(sorted(roles.roles))})", code="unknown_role"
            )
        tenants = security.tenants if security else {"default": None}
        if tenant not in tenants:
            raise InvalidInputError(
                f"tenant {tenant!r} does not exist (tenants: {', '.join(sorted(tenants))}); "
                "add it to security.tenants in the config",
                code="unknown_tenant",
            )
        unknown = sorted(set(scopes or ()) - set(PERMISSIONS))
        if unknown:
            raise InvalidInputError(
                f"unknown scope(s) {', '.join(map(repr, unknown))} (scopes are permissions: "
                f"{', '.join(sorted(PERMISSIONS))})",
                code="unknown_scope",
            )

    async def list_keys(self) -> list[ApiKeyRecord]:
        return await self.store.list_api_keys()

    async def revoke(self, name: str) -> ApiKeyRecord:
        record = await self._active(name)
        await self.store.revoke_api_key(name, utc_now())
        return record

    async def rotate(self, name: str) -> tuple[str, ApiKeyRecord]:
        """A new secret for the key; the old one stops working (on every worker within a second)."""
        record = await self._active(name)
        key, digest, prefix = new_secret()
        await self.store.rotate_api_key(name, digest, prefix, utc_now())
        return key, record.model_copy(update={"prefix": prefix, "key_hash": digest})

    async def _active(self, name: str) -> ApiKeyRecord:
        for record in await self.store.list_api_keys():
            if record.name == name and record.revoked_at is None:
                return record
        raise NotFoundError(f"no active key named {name!r}", code="key_not_found")
