"""Who is calling, for which tenant: credentials from gRPC metadata for the shared guard, and the
tenant a call reads and writes.

The method -> permission mapping is the ``GRPC`` part of the one permission table
(:mod:`agentstage.access.permissions`); a method missing from it is refused for everyone. Health
and reflection stay open, like the HTTP health probes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from agentstage.access.permissions import GRPC, require
from agentstage.access.principals import Credentials, Principal
from agentstage.errors import ForbiddenError

OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
READS = frozenset({"runs.read", "tools.read", "config.read", "conversations.read"})
TENANT_KEY = "x-agentstage-tenant"


def permission_of(path: str) -> str | None:
    """``/pkg.Service/Method`` -> the permission the table names, or None (refused)."""
    return GRPC.get(path)


def is_open(path: str) -> bool:
    return path.lstrip("/").split("/", 1)[0] in OPEN_SERVICES


def peer_address(peer: str) -> str:
    """``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``; ``ipv6:[::1]:5000`` -> ``[::1]``."""
    address = peer.split(":", 1)[1] if ":" in peer else peer
    return address.rsplit(":", 1)[0] if address.count(":") >= 1 and not address.endswith("]") else address


def credentials(metadata: dict[str, str], peer: str) -> Credentials:
    """``authorization: Bearer <API key or JWT>`` or ``x-api-key: <key>``, as over HTTP."""
    found = Credentials(client=peer_address(peer), user_agent=metadata.get("user-agent"))
    authorization = metadata.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        found.bearer = authorization[7:].strip() or None
    found.api_key = metadata.get("x-api-key", "").strip() or None
    return found


@dataclass(frozen=True)
class Caller:
    """The principal of a call and the tenant it asked to act in (``x-agentstage-tenant``)."""

    principal: Principal
    asked_tenant: str | None = None

    def scope(self) -> str | None:
        """The tenant this call reads and changes: the caller's own; an admin (``tenants.any``)
        may name another, or ``*`` for every tenant (None)."""
        asked = self.asked_tenant
        if asked is None or asked == self.principal.tenant:
            return self.principal.tenant
        require(self.principal.permissions, "tenants.any")
        return None if asked == "*" else asked

    def owner(self, known: Collection[str]) -> str:
        """The tenant new runs and conversations belong to."""
        scope = self.scope()
        tenant = scope if scope is not None else self.principal.tenant
        if tenant not in known:
            raise ForbiddenError(f"tenant {tenant!r} does not exist", code="unknown_tenant")
        return tenant
