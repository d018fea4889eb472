"""Runs: run and wait, run and stream, batches, status, cancel, list, and resumable event streams."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import StreamingResponse

from agentstage.core.records import RunRecord
from agentstage.errors import InvalidInputError
from agentstage.interfaces.http.deps import owner_tenant, request_id, runtime, tenant_scope
from agentstage.interfaces.http.routes import problems
from agentstage.interfaces.http.schemas import (
    BatchAccepted,
    BatchBody,
    BatchProgress,
    CancelAccepted,
    RunBody,
    RunList,
    RunResult,
    RunStatusBody,
)
from agentstage.interfaces.http.sse import event_stream
from agentstage.interfaces.http.strict_body import StrictJSONRoute
from agentstage.runtime.requests import RunRequest
from agentstage.types import RunStatus

router = APIRouter(prefix="/api/v1/agent", tags=["runs"], route_class=StrictJSONRoute)
MAX_SEQ = 2**53  # beyond any real log; keeps numbers inside what every database and JSON client holds

SSE_EVENT_SCHEMA = {
    "type": "object",
    "description": "One Server-Sent Event: id = the event's seq, event = its type, data = the event as JSON.",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string"},
        "data": {"type": "string"},
    },
}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
        "description": "The run's events.",
    }
}


def status_body(record: RunRecord) -> dict[str, Any]:
    return {
        **record.result(),
        "last_seq": record.last_seq,
        "input": record.input,
        "conversation_id": record.conversation_id,
    }


@router.post("/run", response_model=RunResult, responses=problems(401, 404, 413, 422, 429))
async def run(body: RunBody, request: Request) -> dict[str, Any]:
    """Run the agent and wait for the end; the answer has the shape of `agent run --output json`."""
    rt = runtime(request)
    run_request = body.to_request(request_id(request)).model_copy(update={"tenant": owner_tenant(request)})
    record = await rt.runs.start(run_request)
    return (await rt.runs.wait(record.id)).result()


@router.post(
    "/run/stream",
    response_class=StreamingResponse,
    responses={**SSE_RESPONSE, **problems(401, 404, 413, 422, 429)},
)
async def run_stream(body: RunBody, request: Request) -> StreamingResponse:
    """Run the agent and stream its events as Server-Sent Events (the run id is in `X-Run-ID`)."""
    rt = runtime(request)
    run_request = body.to_request(request_id(request)).model_copy(update={"tenant": owner_tenant(request)})
    record = await rt.runs.start(run_request)
    return event_stream(rt, record.id, cancel_on_disconnect=body.on_disconnect == "cancel")


@router.post(
    "/batch", status_code=202, response_model=BatchAccepted, responses=problems(401, 403, 413, 422, 429)
)
async def batch(body: BatchBody, request: Request) -> dict[str, Any]:
    """Start one run per input; at most `parallel` execute at once. Poll `GET /batch/{id}`."""
    rt = runtime(request)
    limits = rt.settings.http
    if len(body.inputs) > limits.max_batch_inputs:
        raise InvalidInputError(
            f"a batch may hold at most {limits.max_batch_inputs} inputs, got {len(body.inputs)}",
            code="batch_too_large",
        )
    if body.parallel > limits.max_parallel:
        raise InvalidInputError(
            f"parallel may be at most {limits.max_parallel}, got {body.parallel}", code="invalid_parallel"
        )
    tenant = owner_tenant(request)
    # Every input is a run: it counts against the same per-key and per-tenant limits as a request.
    await rt.guard.admit(
        request.state.principal, len(body.inputs), request.client.host if request.client else None
    )
    requests = [
        RunRequest(
            input=text,
            mode=body.mode,
            profile=body.profile,
            options=body.options,
            correlation_id=request_id(request),
            tenant=tenant,
        )
        for text in body.inputs
    ]
    record = await rt.batches.submit(requests, body.parallel, tenant=tenant)
    return {
        "batch_id": record.id,
        "run_ids": [item["run_id"] for item in record.items],
        "items": record.items,
    }


@router.get("/batch/{batch_id}", response_model=BatchProgress, responses=problems(401, 404, 429))
async def batch_progress(batch_id: str, request: Request) -> dict[str, Any]:
    """Progress of a batch and each input's result, in input order."""
    return await runtime(request).batches.progress(batch_id, tenant_scope(request))


@router.get("/status/{run_id}", response_model=RunStatusBody, responses=problems(401, 404, 429))
async def status(run_id: str, request: Request) -> dict[str, Any]:
    """A run's state, timings, usage and the seq of its last event."""
    return status_body(await runtime(request).runs.status(run_id, tenant_scope(request)))


@router.delete(
    "/cancel/{run_id}", status_code=202, response_model=CancelAccepted, responses=problems(401, 404, 409, 429)
)
async def cancel(run_id: str, request: Request) -> dict[str, Any]:
    """Cancel a run (idempotent; a queued run never starts). 409 with its state if it has ended."""
    record = await runtime(request).runs.cancel(run_id, tenant=tenant_scope(request))
    return {"run_id": record.id, "status": record.status.value, "cancel_requested": True}


@router.get("/runs", response_model=RunList, responses=problems(401, 422, 429))
async def list_runs(
    request: Request,
    status: Annotated[RunStatus | None, Query(description="Only runs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
) -> dict[str, Any]:
    """Runs, newest first."""
    runs = runtime(request).runs
    tenant = tenant_scope(request)
    records, total = await runs.run_page(status=status, limit=limit, offset=offset, tenant=tenant)
    return {"runs": [status_body(r) for r in records], "total": total, "limit": limit, "offset": offset}


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={**SSE_RESPONSE, **problems(401, 404, 422, 429)},
)
async def run_events(
    run_id: str,
    request: Request,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="Resume after this seq.")] = None,
    last_event_id: Annotated[
        str | None, Header(description="SSE reconnection: resume after this seq.")
    ] = None,
) -> StreamingResponse:
    """The run's events as SSE, from the start or exactly after `?after=N` / `Last-Event-ID`;
    works for live and finished runs, also after a restart."""
    rt = runtime(request)
    await rt.runs.status(run_id, tenant_scope(request))
    resume = after or 0
    if last_event_id is not None:
        if not last_event_id.strip().isdigit() or int(last_event_id) > MAX_SEQ:
            raise InvalidInputError(
                f"Last-Event-ID must be an event seq (a whole number), got {last_event_id!r}",
                code="invalid_request",
            )
        resume = int(last_event_id)
    return event_stream(rt, run_id, resume)
