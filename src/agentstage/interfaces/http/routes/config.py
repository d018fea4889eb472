"""Configuration: read (masked), change (validated whole), profiles."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from agentstage.errors import ConflictError
from agentstage.interfaces.http.deps import runtime
from agentstage.interfaces.http.routes import problems
from agentstage.interfaces.http.schemas import ProfileBody
from agentstage.interfaces.http.strict_body import StrictJSONRoute
from agentstage.runtime.config_view import masked_config, reconfigure_remote

router = APIRouter(prefix="/api/v1/config", tags=["config"], route_class=StrictJSONRoute)


@router.get("", responses=problems(401, 429))
async def get_config(request: Request) -> dict[str, Any]:
    """The effective configuration, every layer merged, secrets masked."""
    return masked_config(runtime(request).settings)


@router.put("", responses=problems(401, 403, 413, 422, 429))
async def put_config(changes: dict[str, Any], request: Request) -> dict[str, Any]:
    """Merge changes into the user config; an invalid result is refused whole (nothing applied).
    Admins only; settings that guard the host, paths and unlisted `env:` variables are refused (403)."""
    return await _apply(request, changes)


@router.get("/profiles", responses=problems(401, 429))
async def list_profiles(request: Request) -> list[dict[str, Any]]:
    settings = runtime(request).settings
    return [
        {"name": name, "default": name == settings.default_profile, **profile.model_dump(mode="json")}
        for name, profile in settings.profiles.items()
    ]


@router.post("/profiles", status_code=201, responses=problems(401, 403, 409, 413, 422, 429))
async def add_profile(body: ProfileBody, request: Request) -> dict[str, Any]:
    """Add a profile (a provider chain with parameters); 409 if the name is taken."""
    if body.name in runtime(request).settings.profiles:
        raise ConflictError(f"a profile named {body.name!r} already exists", code="profile_exists")
    profile = body.model_dump(exclude={"name"})
    await _apply(request, {"profiles": {body.name: profile}})
    return {"name": body.name, **profile}


async def _apply(request: Request, changes: dict[str, Any]) -> dict[str, Any]:
    rt = runtime(request)
    restart = await reconfigure_remote(rt.runs, changes, request.state.principal.permissions)
    return {"config": masked_config(rt.settings), "restart_required": restart}
