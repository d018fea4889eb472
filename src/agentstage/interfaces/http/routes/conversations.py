"""Conversations: create, read, delete, talk (with the conversation's history), history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from agentstage.core.records import ConversationRecord
from agentstage.interfaces.http.deps import owner_tenant, request_id, runtime, tenant_scope
from agentstage.interfaces.http.routes import problems
from agentstage.interfaces.http.routes.runs import SSE_RESPONSE
from agentstage.interfaces.http.schemas import Conversation, ConversationBody, History, MessageBody, RunResult
from agentstage.interfaces.http.sse import event_stream
from agentstage.interfaces.http.strict_body import StrictJSONRoute
from agentstage.runtime.requests import RunRequest

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"], route_class=StrictJSONRoute)


def conversation_body(record: ConversationRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "title": record.title,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "metadata": record.metadata,
    }


@router.post("", status_code=201, response_model=Conversation, responses=problems(401, 413, 422, 429))
async def create(body: ConversationBody, request: Request) -> dict[str, Any]:
    """Start a conversation."""
    created = await runtime(request).conversations.create(
        body.title, body.metadata, tenant=owner_tenant(request)
    )
    return conversation_body(created)


@router.get("/{conversation_id}", response_model=Conversation, responses=problems(401, 404, 429))
async def get(conversation_id: str, request: Request) -> dict[str, Any]:
    return conversation_body(await runtime(request).conversations.get(conversation_id, tenant_scope(request)))


@router.delete("/{conversation_id}", status_code=204, responses=problems(401, 404, 429))
async def delete(conversation_id: str, request: Request) -> Response:
    """Delete a conversation and its messages (its runs stay on record)."""
    await runtime(request).conversations.delete(conversation_id, tenant_scope(request))
    return Response(status_code=204)


@router.post(
    "/{conversation_id}/messages",
    response_model=RunResult,
    responses={**SSE_RESPONSE, **problems(401, 404, 413, 422, 429)},
)
async def send(
    conversation_id: str,
    body: MessageBody,
    request: Request,
    stream: Annotated[bool, Query(description="Stream the run's events as SSE.")] = False,
) -> Any:
    """Run the agent on a new message with the conversation's history; the answer joins the history."""
    rt = runtime(request)
    conversation = await rt.conversations.get(conversation_id, tenant_scope(request))
    record = await rt.runs.start(
        RunRequest(
            input=body.input,
            mode=body.mode,
            profile=body.profile,
            options=body.options,
            conversation_id=conversation_id,
            correlation_id=request_id(request),
            tenant=conversation.tenant,
        )
    )
    if stream:
        return event_stream(rt, record.id, cancel_on_disconnect=body.on_disconnect == "cancel")
    return (await rt.runs.wait(record.id)).result()


@router.get("/{conversation_id}/history", response_model=History, responses=problems(401, 404, 429))
async def history(conversation_id: str, request: Request) -> dict[str, Any]:
    messages = await runtime(request).conversations.history(conversation_id, tenant_scope(request))
    return {
        "conversation_id": conversation_id,
        "messages": [
            {
                "position": m.position,
                "role": m.role,
                "content": m.content,
                "run_id": m.run_id,
                "created_at": m.created_at.isoformat(),
            }
            for m in messages
        ],
    }
