"""The audit log, for admins: who did what, allowed or denied, newest last."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from agentstage.interfaces.http.deps import runtime
from agentstage.interfaces.http.routes import problems
from agentstage.interfaces.http.strict_body import StrictJSONRoute

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], route_class=StrictJSONRoute)


@router.get("", responses=problems(401, 403, 422, 429))
async def list_audit(
    request: Request,
    since: Annotated[
        datetime | None, Query(description="Only rows at or after this time (ISO 8601).")
    ] = None,
    principal: Annotated[str | None, Query(description="Only this principal, e.g. api_key:ci.")] = None,
    action: Annotated[str | None, Query(description="Only this permission, e.g. config.write.")] = None,
    after_id: Annotated[int, Query(ge=0, le=2**53, description="Rows after this id (paging).")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    rows = await runtime(request).guard.audit_entries(
        since=since, principal=principal, action=action, after_id=after_id, limit=limit
    )
    return {"entries": [{**row, "ts": row["ts"].isoformat()} for row in rows]}
