"""Who is calling and what they may do: the API key in metadata, the permission of each method, and
a token bucket per key.

The key is read from ``authorization: Bearer <key>`` or ``x-api-key: <key>`` and checked by the
runtime's key service, exactly as the HTTP API does. Each method needs one permission, named in
:data:`PERMISSIONS`; a method missing from the table is refused (deny by default). Health and
reflection stay open, like the HTTP health probes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agentstage.runtime.keys import KeyService

OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

# The one table: full method name -> the permission it needs.
PERMISSIONS: dict[str, str] = {
    "agentstage.v1.AgentService/Execute": "runs.start",
    "agentstage.v1.AgentService/ExecuteStream": "runs.start",
    "agentstage.v1.AgentService/Chat": "runs.start",
    "agentstage.v1.AgentService/Resume": "runs.read",
    "agentstage.v1.AgentService/GetStatus": "runs.read",
    "agentstage.v1.AgentService/Cancel": "runs.cancel",
    "agentstage.v1.ToolService/ListTools": "tools.read",
    "agentstage.v1.ToolService/ExecuteTool": "tools.execute",
    "agentstage.v1.ToolService/RegisterTool": "tools.register",
    "agentstage.v1.ConfigService/GetConfig": "config.read",
    "agentstage.v1.ConfigService/ListProfiles": "config.read",
}


def method_name(path: str) -> str:
    """``/pkg.Service/Method`` as grpc gives it -> ``pkg.Service/Method`` as the table names it."""
    return path.lstrip("/")


def is_open(method: str) -> bool:
    return method.split("/", 1)[0] in OPEN_SERVICES


@dataclass(frozen=True)
class Principal:
    """The caller: an API key (by name), or the local user when auth is off."""

    name: str
    authenticated: bool
    requests_per_minute: int | None = None

    def may(self, permission: str) -> bool:
        """Every valid key holds every permission of the table: keys carry no roles (yet)."""
        return permission in _KNOWN


_KNOWN = frozenset(PERMISSIONS.values())


def presented_key(metadata: dict[str, str]) -> str | None:
    authorization = metadata.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    key = metadata.get("x-api-key", "").strip()
    return key or None


class Authenticator:
    def __init__(self, keys: KeyService, enabled: bool):
        self.keys = keys
        self.enabled = enabled

    async def principal(self, metadata: dict[str, str], peer: str) -> Principal | str:
        """The caller, or the reason it is not authenticated."""
        if not self.enabled:
            return Principal(name=f"peer:{peer_address(peer)}", authenticated=False)
        key = presented_key(metadata)
        if key is None:
            return "this call needs an API key (metadata authorization: Bearer <key>, or x-api-key)"
        record = await self.keys.verify(key)
        if record is None:
            return "the API key is not valid (unknown or revoked)"
        return Principal(name=record.name, authenticated=True, requests_per_minute=record.requests_per_minute)


def peer_address(peer: str) -> str:
    """``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``; ``ipv6:[::1]:5000`` -> ``[::1]``."""
    address = peer.split(":", 1)[1] if ":" in peer else peer
    return address.rsplit(":", 1)[0] if address.count(":") >= 1 and not address.endswith("]") else address


@dataclass
class _Bucket:
    capacity: float
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per caller: ``per_minute`` calls, refilled continuously."""

    def __init__(self, default_per_minute: int):
        self.default_per_minute = default_per_minute
        self._buckets: dict[str, _Bucket] = {}

    def take(self, principal: Principal) -> float:
        """Take one call's token; 0 when allowed, else the seconds until the next one."""
        per_minute = principal.requests_per_minute or self.default_per_minute
        now = time.monotonic()
        bucket = self._buckets.get(principal.name)
        if bucket is None or bucket.capacity != per_minute:
            bucket = self._buckets[principal.name] = _Bucket(per_minute, per_minute, now)
        rate = per_minute / 60
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate
