"""The store protocol: what the run service needs from a database, and nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from agentstage.core.events import RunEvent
from agentstage.core.records import ApiKeyRecord, BatchRecord, ConversationRecord, MessageRecord, RunRecord
from agentstage.types import RunStatus


@dataclass
class Batch:
    """Writes that land together in one transaction: new runs, events, run field updates, messages."""

    new_runs: list[RunRecord] = field(default_factory=list)
    events: list[RunEvent] = field(default_factory=list)
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[MessageRecord] = field(default_factory=list)

    def update(self, run_id: str, **fields: Any) -> None:
        self.updates.setdefault(run_id, {}).update(fields)

    def __bool__(self) -> bool:
        return bool(self.new_runs or self.events or self.updates or self.messages)


class RunStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, batch: Batch) -> None: ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0
    ) -> list[RunRecord]: ...

    async def count_runs(self, *, status: RunStatus | None = None) -> int: ...

    async def unfinished_runs(self) -> list[RunRecord]: ...

    async def events(self, run_id: str, *, after: int = 0, limit: int | None = None) -> list[RunEvent]: ...

    async def heartbeat(self, run_ids: Sequence[str], at: datetime) -> None: ...

    async def cancel_requested(self, run_ids: Sequence[str]) -> set[str]: ...

    async def request_cancel(self, run_id: str) -> None: ...

    async def create_conversation(self, record: ConversationRecord) -> None: ...

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None: ...

    async def list_conversations(self, *, limit: int = 50, offset: int = 0) -> list[ConversationRecord]: ...

    async def delete_conversation(self, conversation_id: str) -> bool: ...

    async def messages(self, conversation_id: str) -> list[MessageRecord]: ...

    async def create_api_key(self, record: ApiKeyRecord) -> None: ...

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def list_api_keys(self) -> list[ApiKeyRecord]: ...

    async def revoke_api_key(self, name: str, at: datetime) -> bool: ...

    async def create_batch(self, record: BatchRecord) -> None: ...

    async def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    async def ping(self) -> None: ...
