"""Snapshots: a run's configuration and outcome, a comparison of two runs, export, and replay."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from agentstage.interfaces.http.deps import request_id, runtime, tenant_scope
from agentstage.interfaces.http.routes import problems
from agentstage.interfaces.http.routes.runs import SSE_RESPONSE
from agentstage.interfaces.http.sse import event_stream
from agentstage.interfaces.http.strict_body import StrictJSONRoute

router = APIRouter(prefix="/api/v1/snapshots", tags=["snapshots"], route_class=StrictJSONRoute)
RUN_ID = r"^[0-9A-Za-z-]{1,64}$"


class Snapshot(BaseModel):
    """A run's snapshot (schema-versioned; secrets masked): what it used and what it produced."""

    model_config = ConfigDict(extra="allow")
    schema_version: int
    run_id: str
    profile: dict[str, Any]
    tools: list[dict[str, Any]]
    prompt: dict[str, Any]
    environment: dict[str, str]
    code: dict[str, Any]
    input: str
    output: str | None
    status: str | None
    metrics: dict[str, Any] | None
    replay_of: str | None = None


class ConfigChange(BaseModel):
    field: str = Field(description="Dotted path, e.g. profile.chain[0].model.")
    change: Literal["changed", "added", "removed"]
    a: Any = None
    b: Any = None


class DivergingEvent(BaseModel):
    seq: int
    type: str
    summary: str = Field(description="What this side did, in words.")


class Divergence(BaseModel):
    index: int
    step: dict[str, Any] | None = Field(description="The step it happened in: step_id, kind, name.")
    where: str
    detail: str | None
    a: DivergingEvent | None = Field(description="None: run A had already ended.")
    b: DivergingEvent | None = Field(description="None: run B had already ended.")


class Diff(BaseModel):
    a: str
    b: str
    config: list[ConfigChange]
    first_divergence: Divergence | None = Field(description="None: the two logs show the same behaviour.")
    outcome: dict[str, dict[str, Any]] = Field(description="Output and metrics of a and b, side by side.")


class ReplayOverrides(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str | None = Field(default=None, description="Re-run with this configured profile instead.")
    model: str | None = Field(
        default=None, max_length=200, description="Use this model for the profile's first provider."
    )


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    live: bool = Field(
        default=False,
        description="false: exact replay from the recording (no model, no tool, no network); "
        "true: re-run the snapshot's configuration with a real model.",
    )
    overrides: ReplayOverrides = Field(default_factory=ReplayOverrides, description="Only with live.")
    on_disconnect: Literal["continue", "cancel"] = Field(
        default="continue", description="When streamed: what the replay does if the client goes away."
    )


class ReplayAccepted(BaseModel):
    run_id: str
    replay_of: str
    live: bool
    status: str
    events: str = Field(description="Where to stream the new run's events (SSE).")


@router.get("/diff", response_model=Diff, responses=problems(401, 404, 409, 422, 429))
async def diff(
    request: Request,
    a: Annotated[str, Query(pattern=RUN_ID, description="The first run's id.")],
    b: Annotated[str, Query(pattern=RUN_ID, description="The second run's id.")],
) -> dict[str, Any]:
    """Compare two runs: configuration field by field, the first diverging event (the step and
    what each run did), then output and metrics side by side."""
    return await runtime(request).runs.snapshots.diff(a, b, tenant_scope(request))


@router.get("/{run_id}", response_model=Snapshot, responses=problems(401, 404, 409, 429))
async def show(run_id: str, request: Request) -> dict[str, Any]:
    """A run's snapshot: resolved profile chain, parameters, limits, tools, prompt templates,
    masked environment, code version, input, output and metrics (409 before the run starts)."""
    return await runtime(request).runs.snapshots.show(run_id, tenant_scope(request))


@router.get("/{run_id}/export", responses=problems(401, 404, 409, 429))
async def export(run_id: str, request: Request) -> JSONResponse:
    """A finished run's snapshot and event log as one self-checking document, the file
    `agent snapshot export` writes and `agent snapshot import` reads."""
    document = await runtime(request).runs.snapshots.export(run_id, tenant_scope(request))
    disposition = f'attachment; filename="run-{run_id}.json"'
    return JSONResponse(document, headers={"Content-Disposition": disposition})


@router.post(
    "/{run_id}/replay",
    status_code=202,
    response_model=ReplayAccepted,
    responses={**SSE_RESPONSE, **problems(401, 404, 409, 413, 422, 429)},
)
async def replay(run_id: str, body: ReplayBody, request: Request) -> Response | dict[str, Any]:
    """Replay a finished run as a new run linked to it (`replay_of`). With `Accept:
    text/event-stream` the new run's events stream back like any run's (its id in `X-Run-ID`);
    otherwise 202 with its id, to follow at `events`. 409 while the original is still running."""
    rt = runtime(request)
    record = await rt.runs.replay(
        run_id,
        tenant=tenant_scope(request),
        live=body.live,
        profile=body.overrides.profile,
        model=body.overrides.model,
        correlation_id=request_id(request),
    )
    if "text/event-stream" in request.headers.get("accept", ""):
        stream = event_stream(rt, record.id, cancel_on_disconnect=body.on_disconnect == "cancel")
        stream.headers["X-Replay-Of"] = run_id
        return stream
    return {
        "run_id": record.id,
        "replay_of": run_id,
        "live": body.live,
        "status": record.status.value,
        "events": f"/api/v1/agent/runs/{record.id}/events",
    }
