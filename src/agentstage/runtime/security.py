"""The runtime's side of security: the guard doors use, and the audit log as the CLI sees it —
both built from the settings and the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from agentstage.access.audit import AuditLog, chain_hash, entry, verify_chain
from agentstage.access.guard import Guard
from agentstage.access.principals import Principal, local_principal
from agentstage.settings import Settings
from agentstage.store.base import RunStore

__all__ = ["AuditTrail", "build_guard", "chain_hash"]


def build_guard(
    settings: Settings, store: RunStore, on_audit_lost: Callable[[int], None] | None = None
) -> Guard:
    """``on_audit_lost``: told how many audit rows could not be written (they are logged too)."""
    return Guard(
        settings.security,
        store,
        auth_enabled=settings.http.auth != "off",
        default_rate=settings.http.requests_per_minute,
        on_audit_lost=on_audit_lost,
    )


class AuditTrail:
    """Reading, checking and (for local commands) writing the audit log."""

    def __init__(
        self,
        store: RunStore,
        principal: Principal | None = None,
        on_lost: Callable[[int], None] | None = None,
    ):
        self.store = store
        self.principal = principal or local_principal()
        self.on_lost = on_lost

    async def record(self, action: str, target: str, details: dict[str, Any] | None = None) -> None:
        row = entry(
            principal=self.principal.label,
            tenant=self.principal.tenant,
            action=action,
            target=target,
            outcome="allowed",
            client="local",
            details=details,
        )
        await AuditLog(self.store, self.on_lost).record(row, durable=True)

    async def entries(
        self, *, since: datetime | None = None, principal: str | None = None, action: str | None = None
    ) -> list[dict[str, Any]]:
        return await self.store.audit_entries(since=since, principal=principal, action=action)

    async def verify(self) -> tuple[int, str | None]:
        """(rows checked, None) when the chain is whole, else the first problem found."""
        rows: list[dict[str, Any]] = []
        after = 0
        while True:  # page through, so a long log does not need one giant query result
            page = await self.store.audit_entries(after_id=after, limit=5000)
            if not page:
                break
            rows.extend(page)
            after = page[-1]["id"]
        return len(rows), verify_chain(rows, await self.store.audit_chain_head())
