"""Chat: one conversation over one bidirectional call.

A reader task takes the client's requests as they come, so a ``cancel`` reaches the run in progress
at once while its events stream out; messages wait their turn and run one after the other, in the
order sent, each seeing the conversation's history. The call ends when the client has closed its
side and the last run has ended. A message that cannot start (an empty input, an unknown profile)
ends the call with INVALID_ARGUMENT naming the field; the conversation stays, and a new call can
continue it by its id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeAlias

import grpc

from agentstage.core.tasks import stop_task
from agentstage.errors import AgentstageError
from agentstage.interfaces.grpc import convert
from agentstage.interfaces.grpc.errors import CallFailed, failure_for
from agentstage.interfaces.grpc.gen import agent_pb2 as pb
from agentstage.interfaces.grpc.interceptor import caller, request_id
from agentstage.interfaces.grpc.runtime import Runtime

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
_CLOSED = object()


class ChatSession:
    def __init__(self, rt: Runtime, context: Context):
        self.rt = rt
        self.owner = rt.owner(context)
        self.conversation_id: str | None = None
        self.inbox: asyncio.Queue[object] = asyncio.Queue()

    async def run(self, requests: AsyncIterator[pb.ChatRequest]) -> AsyncIterator[pb.ChatResponse]:
        reader = asyncio.get_running_loop().create_task(self._read(requests))
        try:
            while True:
                item = await self.inbox.get()
                if item is _CLOSED:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, pb.ChatMessage)
                if self.conversation_id is None:
                    yield await self._open(item)
                async for response in self._answer(item):
                    yield response
        finally:
            await stop_task(reader)

    async def _read(self, requests: AsyncIterator[pb.ChatRequest]) -> None:
        try:
            async for request in requests:
                action = request.WhichOneof("action")
                if action == "message":
                    self.inbox.put_nowait(request.message)
                elif action == "cancel":
                    await self._cancel_current()
                else:
                    self.inbox.put_nowait(convert.bad_field("action", "send a message or a cancel"))
                    return
        except Exception as error:  # reported by the call itself, in order
            self.inbox.put_nowait(error)
            return
        self.inbox.put_nowait(_CLOSED)

    async def _cancel_current(self) -> None:
        if self.owner.run_id is not None:
            with contextlib.suppress(AgentstageError):  # it may have just ended
                await self.rt.runs.cancel(self.owner.run_id)

    async def _open(self, message: pb.ChatMessage) -> pb.ChatResponse:
        """The conversation named by the first message, or a new one."""
        if message.conversation_id:
            with _fields_in_message():
                await self.rt.conversations.get(message.conversation_id, caller().scope())
            self.conversation_id, created = message.conversation_id, False
        else:
            with _fields_in_message():
                tenant = caller().owner(self.rt.settings.security.tenants)
            record = await self.rt.conversations.create(title="gRPC chat", tenant=tenant)
            self.conversation_id, created = record.id, True
        started = pb.ConversationStarted(conversation_id=self.conversation_id, created=created)
        return pb.ChatResponse(conversation=started)

    async def _answer(self, message: pb.ChatMessage) -> AsyncIterator[pb.ChatResponse]:
        assert self.conversation_id is not None
        if message.conversation_id and message.conversation_id != self.conversation_id:
            problem = (
                f"{message.conversation_id!r} is not this call's conversation ({self.conversation_id!r})"
            )
            raise convert.bad_field("message.conversation_id", problem)
        with _fields_in_message():
            request = convert.run_request(message, request_id())
            record = await self.rt.conversations.send(
                self.conversation_id,
                request.input,
                mode=request.mode,
                profile=request.profile,
                options=request.options,
                tenant=caller().scope(),
                correlation_id=request.correlation_id,
            )
        self.owner.own(record.id, message.detach)
        async for event in self.rt.runs.stream(record.id):
            if event.terminal:
                self.owner.release()
            yield pb.ChatResponse(event=convert.chunk(event))


@contextlib.contextmanager
def _fields_in_message() -> Iterator[None]:
    """Errors name fields inside the request's ``message``."""
    try:
        yield
    except AgentstageError as error:
        raise CallFailed(failure_for(error, prefix="message.")) from None
