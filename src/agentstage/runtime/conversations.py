"""Conversations: a history of messages that runs read from and append to.

A run started with a ``conversation_id`` sees the conversation's messages as history; when it
completes, its input and answer are appended in the same transaction as its terminal event.
"""

from __future__ import annotations

from uuid6 import uuid7

from agentstage.core.events import utc_now
from agentstage.core.records import ConversationRecord, MessageRecord, RunRecord
from agentstage.errors import NotFoundError
from agentstage.runtime.requests import RunOptions, RunRequest
from agentstage.runtime.service import RunService


class ConversationService:
    def __init__(self, runs: RunService):
        self.runs = runs
        self.store = runs.store

    async def create(self, title: str = "", metadata: dict[str, object] | None = None) -> ConversationRecord:
        now = utc_now()
        record = ConversationRecord(
            id=str(uuid7()), title=title, created_at=now, updated_at=now, metadata=dict(metadata or {})
        )
        await self.store.create_conversation(record)
        return record

    async def get(self, conversation_id: str) -> ConversationRecord:
        record = await self.store.get_conversation(conversation_id)
        if record is None:
            raise NotFoundError(f"unknown conversation {conversation_id!r}", code="conversation_not_found")
        return record

    async def list_conversations(self, *, limit: int = 50, offset: int = 0) -> list[ConversationRecord]:
        return await self.store.list_conversations(limit=limit, offset=offset)

    async def delete(self, conversation_id: str) -> None:
        if not await self.store.delete_conversation(conversation_id):
            raise NotFoundError(f"unknown conversation {conversation_id!r}", code="conversation_not_found")

    async def history(self, conversation_id: str) -> list[MessageRecord]:
        await self.get(conversation_id)
        return await self.store.messages(conversation_id)

    async def send(
        self,
        conversation_id: str,
        text: str,
        *,
        mode: str | None = None,
        profile: str | None = None,
        options: RunOptions | None = None,
    ) -> RunRecord:
        """Start a run on the conversation (its history as context); returns the queued run."""
        await self.get(conversation_id)
        request = RunRequest(
            input=text,
            mode=mode,
            profile=profile,
            options=options or RunOptions(),
            conversation_id=conversation_id,
        )
        return await self.runs.start(request)
