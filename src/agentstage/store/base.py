"""The store protocol: what the run service needs from a database, and nothing more."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agentstage.core.events import RunEvent
from agentstage.core.records import (
    ApiKeyRecord,
    BatchRecord,
    ConversationRecord,
    MessageRecord,
    RunRecord,
    SpanRecord,
    ToolTiming,
)
from agentstage.errors import StoreError
from agentstage.types import RunStatus


@dataclass
class ConversationTurn:
    """Messages a run adds to a conversation. Their positions are assigned by the store when they
    are written (never from the history a run read when it started)."""

    conversation_id: str
    run_id: str
    messages: list[tuple[str, str]]  # (role, content), in order
    at: datetime


@dataclass
class RunWrites:
    """Everything one run hands the store in one commit."""

    run_id: str
    new_run: RunRecord | None = None
    events: list[RunEvent] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)
    turns: list[ConversationTurn] = field(default_factory=list)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)  # hash -> body
    # The attempt the writer holds: the store refuses these writes (``run_fenced``) unless the
    # run's stored attempt is still this one. None: unfenced (the embedded mode, a run's creation).
    fence: int | None = None
    # Set by the store when it refused these writes: how many of ``events`` it kept anyway (those
    # before the refused row, never an ending), so the run's log runs up to the failure.
    kept_events: int = 0

    def __bool__(self) -> bool:
        return bool(self.new_run or self.events or self.updates or self.turns or self.snapshots)


@dataclass
class KeyReport:
    """Encryption at rest as it stands: the keyring, the key ids the store lists, the work left."""

    current: str | None  # the key that seals new values (None: encryption is off)
    usable: list[str]  # every key id the keyring can open, the current one first
    listed: list[str]  # key ids the store's values may be sealed with
    pending: dict[str, int] = field(default_factory=dict)  # table -> rows with a value to re-seal


@dataclass
class RekeyResult:
    rows: int  # rows rewritten
    retired: list[str]  # key ids the store no longer needs
    checkpointed: bool  # SQLite: the write-ahead log was emptied (always True elsewhere)


@dataclass
class Batch:
    """Writes of many runs that land in one transaction. A run whose rows the database refuses is
    left out (its writes are reported back); the other runs of the batch are still committed."""

    runs: dict[str, RunWrites] = field(default_factory=dict)

    def of(self, run_id: str) -> RunWrites:
        writes = self.runs.get(run_id)
        if writes is None:
            writes = self.runs[run_id] = RunWrites(run_id)
        return writes

    def update(self, run_id: str, **fields: Any) -> None:
        self.of(run_id).updates.update(fields)

    def events(self) -> Iterator[RunEvent]:
        for writes in self.runs.values():
            yield from writes.events

    def __bool__(self) -> bool:
        return any(self.runs.values())


@dataclass
class Claim:
    """The answer to a claim: the run (now ours, at ``record.attempt``), or why not."""

    record: RunRecord | None = None
    tenant_busy: bool = False  # the run's tenant already has its limit of runs executing


class RunStore(Protocol):
    @property
    def location(self) -> str:
        """Where the data lives, as an operator would name it (a file path or a masked URL)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, batch: Batch) -> dict[str, StoreError]:
        """Commit the batch. Returns the runs whose rows were refused (each with why), having
        committed all the others, and of each refused run the events before the refused row (its
        ``kept_events``: a created run's log runs up to the failure, whichever row failed); raises :class:`StoreError` (``store_unavailable`` or
        ``storage_full``) when nothing could be written."""
        ...

    async def probe(self) -> None:
        """Prove the store can be written right now (a tiny write); raises :class:`StoreError`."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0, tenant: str | None = None
    ) -> list[RunRecord]: ...

    async def count_runs(self, *, status: RunStatus | None = None, tenant: str | None = None) -> int: ...

    async def run_page(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0, tenant: str | None = None
    ) -> tuple[list[RunRecord], int]:
        """:meth:`list_runs` and :meth:`count_runs` in one read (one connection, one hand-over)."""
        ...

    async def search_runs(
        self,
        *,
        text: str | None = None,
        id_prefix: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        offset: int = 0,
        tenant: str | None = None,
    ) -> list[RunRecord]:
        """Runs whose input or output contains ``text`` (any case) and whose id starts with
        ``id_prefix``, newest first; with a ``tenant``, only that tenant's."""
        ...

    async def unfinished_runs(self) -> list[RunRecord]: ...

    async def events(self, run_id: str, *, after: int = 0, limit: int | None = None) -> list[RunEvent]: ...

    async def last_event(self, run_id: str) -> RunEvent | None: ...

    async def snapshot(self, snapshot_hash: str) -> dict[str, Any] | None: ...

    async def heartbeat(self, run_ids: Sequence[str], at: datetime) -> None: ...

    async def cancel_requested(self, run_ids: Sequence[str]) -> set[str]: ...

    async def request_cancel(self, run_id: str, reason: str = "") -> None: ...

    async def create_conversation(self, record: ConversationRecord) -> None: ...

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None: ...

    async def list_conversations(
        self, *, limit: int = 50, offset: int = 0, tenant: str | None = None
    ) -> list[ConversationRecord]: ...

    async def delete_conversation(self, conversation_id: str) -> bool: ...

    async def messages(self, conversation_id: str) -> list[MessageRecord]: ...

    async def create_api_key(self, record: ApiKeyRecord) -> None: ...

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def list_api_keys(self) -> list[ApiKeyRecord]: ...

    async def revoke_api_key(self, name: str, at: datetime) -> bool: ...

    # security tables (store/security.py) ------------------------------------------------------

    async def rotate_api_key(self, name: str, key_hash: str, prefix: str, at: datetime) -> bool: ...

    async def touch_api_key(self, key_id: str, at: datetime) -> None: ...

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

    async def take_tokens(
        self, identity: str, capacity: float, per_second: float, need: int, extra: int, now: float
    ) -> tuple[int, float]: ...

    # batches -------------------------------------------------------------------------------------

    async def create_batch(self, record: BatchRecord) -> None: ...

    async def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    async def ping(self) -> None: ...

    # encryption at rest (store/rekey.py) -------------------------------------------------------

    async def check_encryption(self, *, register: bool = False) -> None:
        """Raise the one key error (``encryption_key_missing`` / ``encryption_key_unknown``) when
        the store's data needs a key the configured keyring lacks."""
        ...

    async def key_report(self) -> KeyReport: ...

    async def reencrypt(self, progress: Callable[[str, int], None] | None = None) -> RekeyResult:
        """Re-seal every stored value with the current key; resumable, each page commits."""
        ...

    # leases (store/leases.py): which process executes a run, fenced by its attempt -----------------

    async def claim_run(
        self, run_id: str, worker_id: str, at: datetime, tenant_limit: int | None
    ) -> Claim: ...

    async def requeue_run(self, run_id: str, attempt: int) -> bool: ...

    async def fence_run(self, run_id: str, attempt: int) -> bool: ...

    async def stalled_runs(self, before: datetime) -> list[RunRecord]: ...

    async def unclaimed_runs(self, before: datetime) -> list[RunRecord]: ...

    async def active_runs(self, tenant: str) -> int: ...

    async def admit_run(self, run_id: str, tenant: str, limit: int, at: datetime) -> int | None: ...

    async def owned_heartbeat(self, run_ids: Sequence[str], worker_id: str, at: datetime) -> None: ...

    # spans (observability; store/spans.py) -----------------------------------------------------

    async def add_spans(self, records: Sequence[SpanRecord]) -> None:
        """Keep finished spans; one seen before (same trace and span id) is kept once."""
        ...

    async def spans(self, *, run_id: str | None = None, trace_id: str | None = None) -> list[SpanRecord]:
        """Spans kept as rows (door spans; a run's own spans are derived from its events), of a run
        or of a trace, oldest first (both: the run's and its trace's door spans)."""
        ...

    async def add_tool_timings(self, timings: Sequence[ToolTiming]) -> None:
        """Keep how tool calls' time split between validation and work; one seen before is kept once."""
        ...

    async def tool_timings(self, run_id: str) -> list[ToolTiming]:
        """The timings of a run's tool calls."""
        ...
