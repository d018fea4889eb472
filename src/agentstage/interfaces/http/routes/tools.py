"""Tools: the catalog, one tool's schema, running a tool directly, and removing one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from agentstage.core.tools import tool_id as qualified_name
from agentstage.errors import AgentstageError
from agentstage.interfaces.http.deps import runtime
from agentstage.interfaces.http.routes import problems
from agentstage.interfaces.http.schemas import Tool, ToolExecuteBody, ToolResult
from agentstage.interfaces.http.strict_body import StrictJSONRoute
from agentstage.runtime.catalog import ToolServerSpec, describe
from agentstage.runtime.config_view import remember_tool_servers

router = APIRouter(prefix="/api/v1/tools", tags=["tools"], route_class=StrictJSONRoute)


@router.get("", response_model=list[Tool], responses=problems(401, 429))
async def list_tools(
    request: Request, category: Annotated[str | None, Query(description="Only this category.")] = None
) -> list[dict[str, Any]]:
    return [describe(tool) for tool in runtime(request).runs.catalog.list_tools(category)]


@router.post(
    "/register", status_code=201, response_model=list[Tool], responses=problems(401, 403, 409, 413, 422, 429)
)
async def register(spec: ToolServerSpec, request: Request) -> list[dict[str, Any]]:
    """Connect an MCP server (a `command` run over stdio, or a streamable-HTTP `url`); its tools
    join the catalog as `<name>.<tool>:mcp` and the registration is kept in the user config."""
    rt = runtime(request)
    spec = spec.model_copy(update={"origin": "http"})  # checked against security.mcp, now and at every start
    tools = await rt.runs.catalog.connect(spec)
    try:
        await remember_tool_servers(rt.runs)
    except AgentstageError:
        await rt.runs.catalog.disconnect(spec.name)  # nothing half-applied
        raise
    return [describe(tool) for tool in tools]


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
        "tool": qualified_name(tool),
        "output": outcome.output,
        "error": outcome.error.model_dump() if outcome.error else None,
        "latency_ms": outcome.latency_ms,
    }


@router.delete("/{tool_id}", status_code=204, responses=problems(401, 404, 429))
async def remove(tool_id: str, request: Request) -> Response:
    """Remove a tool, or a registered MCP server (by its name) with all its tools."""
    rt = runtime(request)
    catalog = rt.runs.catalog
    if tool_id in {spec.name for spec in catalog.servers()}:
        await catalog.disconnect(tool_id)
        await remember_tool_servers(rt.runs)
    else:
        catalog.unregister(tool_id)
    return Response(status_code=204)
