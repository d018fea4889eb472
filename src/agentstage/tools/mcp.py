"""Tools from MCP servers, through the official ``mcp`` SDK: stdio (a command) or streamable HTTP.

Each server's session lives in a task of its own, because the SDK's transports are context
managers that must be entered and left in the same task; tools call into that session. A server's
tools are named ``<server>.<tool>`` (version ``mcp``), their arguments are checked against the
server's JSON schema before the call, and an error result becomes a ``tool.result`` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any, ClassVar, TextIO

from agentstage.core.tools import ToolContext
from agentstage.errors import ConfigError, ToolArgumentError, ToolError

CONNECT_TIMEOUT = 30.0


class McpTool:
    version: ClassVar[str] = "mcp"

    def __init__(self, server: McpServer, remote: Any):
        self.server = server
        self.remote_name: str = remote.name
        self.name = f"{server.name}.{remote.name}"
        self.description = remote.description or remote.title or remote.name
        self.category = f"mcp:{server.name}"
        self._schema: dict[str, Any] = dict(remote.input_schema or {"type": "object"})

    @property
    def parameters(self) -> dict[str, Any]:
        return self._schema

    def validate_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        from jsonschema import Draft202012Validator

        errors = sorted(Draft202012Validator(self._schema).iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            details = [
                {
                    "field": ".".join(str(p) for p in error.path) or "(root)",
                    "message": error.message,
                    "type": str(error.validator),
                }
                for error in errors
            ]
            summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
            raise ToolArgumentError(
                f"invalid arguments for {self.name}:mcp: {summary}", details={"errors": details}
            )
        return arguments

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        result = await self.server.call(self.remote_name, arguments, context.remaining())
        texts = [block.text for block in result.content if getattr(block, "type", "") == "text"]
        if result.is_error:
            raise ToolError(
                f"{self.name}: {' '.join(texts) or 'the tool reported an error'}", code="tool_error"
            )
        if result.structured_content is not None:
            return result.structured_content
        joined = "\n".join(texts)
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(joined)
        return joined


class McpServer:
    """One connected MCP server (implements the catalog's ToolSource)."""

    def __init__(self, spec: Any):
        self.spec = spec
        self.name: str = spec.name
        self.tools: list[Any] = []
        self._session: Any = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._errlog: TextIO | None = None

    async def start(self) -> McpServer:
        self._task = asyncio.get_running_loop().create_task(self._own_session(), name=f"mcp-{self.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), CONNECT_TIMEOUT)
        except TimeoutError:
            await self.close()
            raise ConfigError(
                f"MCP server {self.name!r} did not answer within {CONNECT_TIMEOUT:g}s"
            ) from None
        if self._error is not None:
            await self.close()
            raise ConfigError(
                f"cannot start MCP server {self.name!r}: {self._error}", code="tool_server_unavailable"
            )
        return self

    async def _own_session(self) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport())
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                listed = await session.list_tools()
                self._session = session
                self.tools = [McpTool(self, remote) for remote in listed.tools]
                self._ready.set()
                await self._stop.wait()
        except Exception as error:  # reported to whoever is waiting in start()
            self._error = error
        finally:
            self._session = None
            self._ready.set()

    def _transport(self) -> Any:
        if self.spec.command is not None:
            from mcp import StdioServerParameters
            from mcp.client.stdio import stdio_client

            params = StdioServerParameters(
                command=self.spec.command, args=list(self.spec.args), env={**os.environ, **self.spec.env}
            )
            return stdio_client(params, errlog=open(os.devnull, "w"))
        return _http_transport(self.spec.url)

    async def call(self, tool: str, arguments: dict[str, Any], read_timeout: float | None) -> Any:
        if self._session is None:
            raise ToolError(f"MCP server {self.name!r} is not connected", code="tool_unavailable")
        return await self._session.call_tool(tool, arguments, read_timeout_seconds=read_timeout)

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
            self._task = None
        if self._errlog is not None:
            self._errlog.close()
            self._errlog = None


@contextlib.asynccontextmanager
async def _http_transport(url: str) -> Any:
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as streams:
        yield streams[0], streams[1]


async def connect(spec: Any) -> McpServer:
    return await McpServer(spec).start()
