"""Health probes: live (the process answers), ready (store and default provider usable), startup."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agentstage.interfaces.http.deps import runtime
from agentstage.interfaces.http.schemas import Health
from agentstage.interfaces.http.strict_body import StrictJSONRoute
from agentstage.runtime.wiring import DEGRADED, readiness

router = APIRouter(prefix="/health", tags=["health"], route_class=StrictJSONRoute)

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "Not ready; the checks say why."}
}


@router.get("/live", response_model=Health)
async def live() -> dict[str, Any]:
    return {"status": "ok", "checks": {}}


@router.get("/ready", response_model=Health, responses=UNAVAILABLE)
async def ready(request: Request) -> JSONResponse:
    rt = runtime(request)
    checks = await readiness(rt.settings, rt.runs)
    ok = all(value == "ok" or value.startswith(DEGRADED) for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/startup", response_model=Health, responses=UNAVAILABLE)
async def startup(request: Request) -> JSONResponse:
    started = runtime(request).started
    body = {
        "status": "ok" if started else "unavailable",
        "checks": {"store_migrated": "ok" if started else "pending"},
    }
    return JSONResponse(body, status_code=200 if started else 503)
