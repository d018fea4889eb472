"""The audit log: append-only, each row chained to the previous by SHA-256 over canonical JSON.

Rows say who (principal, tenant), what (permission, target), how it went (allowed / denied and
the status), and from where (client address, user agent, request id). Changes and refusals are
recorded as they happen and each waits until its row is durable (committed to the store) before
it is answered, so a client never sees an answer whose audit row a crash could take back. Rows
are written by one background task with group commit: the rows of every request that arrives
while a write is in progress go together into the next one, so a busy server makes a few small
transactions rather than one per request, and an idle one answers at once.

A row that cannot be written is never lost silently: it is logged at ERROR, counted
(``on_lost``, the ``agent_audit_rows_lost_total`` metric) and the waiting caller gets the error.
:func:`verify_chain` recomputes every hash and names the first row that does not match.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from agentstage.core.events import utc_now
from agentstage.core.tasks import wait_stopped

log = logging.getLogger("agentstage.audit")
GENESIS = "0" * 64
FLUSH_SECONDS = 0.05
HASHED = ("id", "ts", "principal", "tenant", "action", "target", "outcome", "status", "client",
          "user_agent", "request_id", "details", "prev_hash")  # fmt: skip


class AuditStore(Protocol):
    async def append_audit(
        self, entries: Sequence[dict[str, Any]], chain: Callable[[str, dict[str, Any]], str]
    ) -> None: ...

    async def audit_entries(
        self,
        *,
        since: datetime | None = None,
        principal: str | None = None,
        action: str | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...

    async def audit_chain_head(self) -> tuple[int, str] | None: ...


def _canonical_ts(value: Any) -> str:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value)


def chain_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the row's fields, ``prev_hash`` included."""
    body = {name: row.get(name) for name in HASHED}
    body["prev_hash"] = prev_hash
    body["ts"] = _canonical_ts(body["ts"])
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def entry(
    *,
    principal: str,
    action: str,
    target: str,
    outcome: str,
    tenant: str | None = None,
    status: int | None = None,
    client: str | None = None,
    user_agent: str | None = None,
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "ts": utc_now(),
        "principal": principal[:200],
        "tenant": tenant,
        "action": action[:64],
        "target": target[:2000],
        "outcome": outcome,
        "status": status,
        "client": (client or "")[:64] or None,
        "user_agent": (user_agent or "")[:500] or None,
        "request_id": request_id,
        "details": details or {},
    }


def verify_chain(rows: Sequence[dict[str, Any]], head: tuple[int, str] | None) -> str | None:
    """None when every row hashes to what it says and the chain is complete; else what is wrong."""
    previous = GENESIS
    expected_id = 1
    for row in rows:
        if row["id"] != expected_id:
            return f"row {expected_id} is missing (next row is {row['id']})"
        if row["prev_hash"] != previous:
            return f"row {row['id']} does not follow row {row['id'] - 1} (prev_hash differs)"
        if chain_hash(previous, row) != row["hash"]:
            return f"row {row['id']} was changed after it was written (hash differs)"
        previous = row["hash"]
        expected_id += 1
    if head is not None and (head[0] != expected_id - 1 or head[1] != previous):
        return f"the log ends at row {expected_id - 1} but its head says row {head[0]}: rows were removed"
    return None


class AuditLog:
    """Queues rows and writes them at once, in groups (the rows of the requests in flight share a
    transaction); ``record(..., durable=True)`` waits for the write."""

    def __init__(self, store: AuditStore, on_lost: Callable[[int], None] | None = None):
        self.store = store
        self.on_lost = on_lost
        self._pending: list[dict[str, Any]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="agentstage-audit")

    async def record(self, row: dict[str, Any], *, durable: bool = False) -> None:
        """Queue ``row``; with ``durable``, return once it is committed (or raise why it is not)."""
        self._pending.append(row)
        if self._task is None or self._task.done():  # no writer (a CLI command): write now
            await self.flush(raise_errors=durable)
            return
        self._wake.set()  # written at once, with the rows of the other requests in flight
        if durable:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await asyncio.shield(waiter)  # a caller that goes away does not take its row with it

    async def flush(self, *, raise_errors: bool = False) -> None:
        async with self._writing:  # one write at a time: rows reach the chain in the order queued
            rows, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            if not rows:
                return
            error: Exception | None = None
            try:
                await self.store.append_audit(rows, chain_hash)
            except Exception as failure:  # logged and counted; the waiting callers get the error
                error = failure
                self.dropped += len(rows)
                log.error("audit rows could not be written (%d lost): %s", len(rows), failure)
                if self.on_lost is not None:
                    self.on_lost(len(rows))
            for waiter in waiters:
                if not waiter.done():
                    if error is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(error)
                        waiter.exception()  # marked seen: a caller that went away cannot read it
            if error is not None and raise_errors:
                raise error

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            if self._pending:
                await self.flush()

    async def close(self) -> None:
        """Write what is queued and stop; a write in progress is finished, never cut."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await wait_stopped(self._task)
            self._task = None
        await self.flush()
