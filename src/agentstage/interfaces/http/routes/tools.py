"""Tools: the catalog, one tool's schema, running a tool directly, and removing one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from agentstage.core.tools import tool_id
from agentstage.interfaces.http.deps import runtime
from agentstage.interfaces.http.routes import problems
from agentstage.interfaces.http.schemas import Tool, ToolExecuteBody, ToolResult
from agentstage.runtime.catalog import describe

router = APIRouter(prefix="/api/v1/tools", tags=["tools"])


@router.get("", response_model=list[Tool], responses=problems(401, 429))
async def list_tools(
    request: Request, category: Annotated[str | None, Query(description="Only this category.")] = None
) -> list[dict[str, Any]]:
    return [describe(tool) for tool in runtime(request).runs.catalog.list_tools(category)]


@router.get("/{tool_id}", response_model=Tool, responses=problems(401, 404, 429))
async def get_tool(tool_id: str, request: Request) -> dict[str, Any]:
    """One tool by `name` or `name:version`: description, version and argument schema."""
    return describe(runtime(request).runs.catalog.get(tool_id))


@router.post("/{tool_id}/execute", response_model=ToolResult, responses=problems(401, 404, 413, 422, 429))
async def execute(tool_id: str, body: ToolExecuteBody, request: Request) -> dict[str, Any]:
    """Validate arguments against the tool's schema (422 naming the field) and run it once."""
    catalog = runtime(request).runs.catalog
    tool = catalog.get(tool_id)
    outcome = await catalog.execute(tool_id, body.arguments)
    return {
        "tool": tool_id_of(tool),
        "output": outcome.output,
        "error": outcome.error.model_dump() if outcome.error else None,
        "latency_ms": outcome.latency_ms,
    }


@router.delete("/{tool_id}", status_code=204, responses=problems(401, 404, 429))
async def remove(tool_id: str, request: Request) -> Response:
    """Remove a tool from this server's catalog (runs started afterwards cannot use it)."""
    runtime(request).runs.catalog.unregister(tool_id)
    return Response(status_code=204)


def tool_id_of(tool: Any) -> str:
    return tool_id(tool)
