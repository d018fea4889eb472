"""Prometheus metrics of every worker process. Needs ``metrics.read`` unless ``metrics.public``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from agentstage.interfaces.http.deps import runtime
from agentstage.interfaces.http.strict_body import StrictJSONRoute

router = APIRouter(tags=["observability"], route_class=StrictJSONRoute)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format; under several workers, their values added up (files on disk)."""
    body, content_type = await run_in_threadpool(runtime(request).telemetry.metrics_text)
    return Response(body, media_type=content_type)
