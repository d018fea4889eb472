"""Conversations: a history of messages that runs read from and append to.

A run started with a ``conversation_id`` sees the conversation's messages as history; when it
completes, its input and answer are appended in the same transaction as its terminal event.
A conversation belongs to a tenant: every verb takes the caller's ``tenant`` (None: any tenant,
for admins acting across tenants and the local CLI), and another tenant's conversation is simply
not found.
"""

from __future__ import annotations

from uuid6 import uuid7

from agentstage.core.events import utc_now
from agentstage.core.records import ConversationRecord, MessageRecord, RunRecord
from agentstage.errors import NotFoundError
from agentstage.observability.masking import redact
from agentstage.runtime.requests import RunOptions, RunRequest
from agentstage.runtime.service import RunService


class ConversationService:
    def __init__(self, runs: RunService):
        self.runs = runs
        self.store = runs.store

    async def create(
        self, title: str = "", metadata: dict[str, object] | None = None, *, tenant: str = "default"
    ) -> ConversationRecord:
        now = utc_now()
        # A title is often the first question, which may quote a secret: masked like run inputs.
        record = ConversationRecord(
            id=str(uuid7()), tenant=tenant, title=redact(title), created_at=now, updated_at=now,
            metadata=dict(metadata or {}),
        )  # fmt: skip
        await self.store.create_conversation(record)
        return record

    async def get(self, conversation_id: str, tenant: str | None = None) -> ConversationRecord:
        record = await self.store.get_conversation(conversation_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            raise NotFoundError(f"unknown conversation {conversation_id!r}", code="conversation_not_found")
        return record

    async def list_conversations(
        self, *, limit: int = 50, offset: int = 0, tenant: str | None = None
    ) -> list[ConversationRecord]:
        return await self.store.list_conversations(limit=limit, offset=offset, tenant=tenant)

    async def delete(self, conversation_id: str, tenant: str | None = None) -> None:
        await self.get(conversation_id, tenant)
        if not await self.store.delete_conversation(conversation_id):
            raise NotFoundError(f"unknown conversation {conversation_id!r}", code="conversation_not_found")

    async def history(self, conversation_id: str, tenant: str | None = None) -> list[MessageRecord]:
        await self.get(conversation_id, tenant)
        return await self.store.messages(conversation_id)

    async def send(
        self,
        conversation_id: str,
        text: str,
        *,
        mode: str | None = None,
        profile: str | None = None,
        options: RunOptions | None = None,
        tenant: str | None = None,
        correlation_id: str | None = None,
    ) -> RunRecord:
        """Start a run on the conversation (its history as context); returns the queued run.
        The run belongs to the conversation's tenant."""
        conversation = await self.get(conversation_id, tenant)
        request = RunRequest(
            input=text,
            mode=mode,
            profile=profile,
            options=options or RunOptions(),
            conversation_id=conversation_id,
            correlation_id=correlation_id,
            tenant=conversation.tenant,
        )
        return await self.runs.start(request)
