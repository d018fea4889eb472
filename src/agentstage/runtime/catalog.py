"""The tool catalog: every tool by ``name:version``, with its category.

A run gets a :class:`~agentstage.core.tools.Toolset` drawn from here; doors list, describe and
test tools through it, never by importing a tool.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentstage.core.ids import new_call_id
from agentstage.core.messages import ToolCall
from agentstage.core.tools import Tool, ToolContext, ToolOutcome, Toolset, tool_id
from agentstage.errors import AgentstageError, ConfigError, ConflictError, NotFoundError

log = logging.getLogger("agentstage.runtime")


def schema_hash(tool: Tool) -> str:
    canonical = json.dumps(tool.parameters, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def describe(tool: Tool) -> dict[str, Any]:
    """A tool as doors show it: identity, category, description and argument schema."""
    return {
        "id": tool_id(tool),
        "name": tool.name,
        "version": tool.version,
        "category": tool.category,
        "description": tool.description,
        "parameters": tool.parameters,
        "schema_hash": schema_hash(tool),
    }


class ToolServerSpec(BaseModel):
    """An MCP server to take tools from: a command (stdio) or a URL (streamable HTTP).

    ``origin`` records who asked for it: ``config`` (written on the host) or ``http`` (registered
    over the network, set by the server whatever the request says). An ``http`` server is checked
    against ``security.mcp`` when registered and again at every start, so narrowing the policy
    on the host also drops servers registered earlier."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Prefix of its tools' names.")
    command: str | None = Field(default=None, max_length=4096)
    args: list[str] = Field(default_factory=list, max_length=64)
    env: dict[str, str] = Field(default_factory=dict, description="Variables set for a command server.")
    url: str | None = Field(default=None, pattern=r"^https?://", max_length=2048)
    origin: Literal["config", "http"] = Field(default="config", description="Set by the server.")

    @model_validator(mode="after")
    def _one_transport(self) -> ToolServerSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        return self


class ToolSource(Protocol):
    """A connected tool server: its tools, and a way to disconnect."""

    tools: list[Tool]

    async def close(self) -> None: ...


Connector = Callable[[ToolServerSpec], Awaitable[ToolSource]]


VersionKey = tuple[str, tuple[int, ...], int, tuple[tuple[int, int | str], ...], str]
_PRE_RELEASE, _RELEASE = 1, 2
_STAGES = {"dev": 0, "post": 3, "rev": 3}  # any other word marks a pre-release (alpha, beta, rc…)


def version_order(version: str) -> VersionKey:
    """Sort key that makes a bare tool name resolve to the version a user would call newest.

    Numbers compare as numbers (``v10`` after ``v9``, ``1.10.0`` after ``1.9.2``; a date such as
    ``2026-01-05`` is all numbers). A word after the first number marks a stage, as in semver and
    PEP 440: ``v2.dev1`` < ``v2-beta`` < ``v2-rc1`` < ``v2`` < ``v2-post1`` < ``v2.1``. A word
    before it (``v`` in ``v2``) names the scheme and is compared first. Build metadata (``+build5``)
    does not rank, as in semver; two versions that rank alike are ordered by their text, so the
    newest is always the same one."""
    ranked = version.split("+", 1)[0]
    tokens = re.findall(r"\d+|[^\W\d_]+", ranked.lower())
    scheme = ""
    while tokens and not tokens[0].isdigit():
        scheme += tokens.pop(0)
    release: list[int] = []
    while tokens and tokens[0].isdigit():
        release.append(int(tokens.pop(0)))
    stage = _STAGES.get(tokens[0], _PRE_RELEASE) if tokens else _RELEASE
    rest = tuple((0, int(t)) if t.isdigit() else (1, t) for t in tokens[0 if stage == _PRE_RELEASE else 1 :])
    return scheme, tuple(release), stage, rest, version


class ToolCatalog:
    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        call_timeout: float = 30.0,
        max_output_chars: int = 262_144,
        connector: Connector | None = None,
    ):
        self.call_timeout = call_timeout
        self.max_output_chars = max_output_chars
        self.connector = connector
        self._tools: dict[str, Tool] = {}
        self._toolsets: dict[tuple[str, ...] | None, Toolset] = {}  # cleared whenever the tools change
        self._servers: dict[str, tuple[ToolServerSpec, ToolSource]] = {}
        for tool in tools:
            self.register(tool)

    async def connect(self, spec: ToolServerSpec) -> list[Tool]:
        """Connect a tool server and add its tools; its name must be new."""
        if self.connector is None:
            raise ConfigError("this catalog cannot connect tool servers")
        if spec.name in self._servers:
            raise ConflictError(
                f"a tool server named {spec.name!r} is already registered", code="tool_server_exists"
            )
        source = await self.connector(spec)
        # By name, not name:version: a server's "math.calculate" at another version would become
        # the newest of a built-in and take over every run that calls it by name.
        taken = {t.name for t in self._tools.values()}
        clashes = sorted({t.name for t in source.tools if t.name in taken})
        if clashes:
            await source.close()
            raise ConflictError(f"tools already registered: {', '.join(clashes)}", code="tool_exists")
        self._servers[spec.name] = (spec, source)
        for tool in source.tools:
            self.register(tool)
        return list(source.tools)

    def servers(self) -> list[ToolServerSpec]:
        return [spec for spec, _ in self._servers.values()]

    async def sync(self, entries: Iterable[dict[str, Any]]) -> None:
        """Make the connected tool servers those of ``entries`` (``tools.mcp_servers``): connect
        the missing, drop the ones no longer listed, reconnect a changed one. A server that cannot
        be connected is logged and skipped, not fatal: the others still serve."""
        wanted: dict[str, ToolServerSpec] = {}
        for entry in entries:
            try:
                spec = ToolServerSpec.model_validate(entry)
            except ValidationError as error:
                log.warning("tool server %r not connected: %s", entry.get("name"), error)
                continue
            wanted[spec.name] = spec
        for spec in self.servers():
            if wanted.get(spec.name) != spec:
                await self.disconnect(spec.name)
        for name, spec in wanted.items():
            if name not in self._servers:
                try:
                    await self.connect(spec)
                except AgentstageError as error:
                    log.warning("tool server %r not connected: %s", name, error)

    async def disconnect(self, name: str) -> None:
        spec_source = self._servers.pop(name, None)
        if spec_source is None:
            raise NotFoundError(f"unknown tool server {name!r}", code="tool_not_found")
        for tool in spec_source[1].tools:
            self._tools.pop(tool_id(tool), None)
        self._toolsets.clear()
        await spec_source[1].close()

    async def close(self) -> None:
        for name in list(self._servers):
            await self.disconnect(name)
        for tool in self._tools.values():
            close = getattr(tool, "close", None)
            if callable(close):
                close()

    def register(self, tool: Tool) -> None:
        self._tools[tool_id(tool)] = tool
        self._toolsets.clear()

    def unregister(self, identifier: str) -> None:
        del self._tools[tool_id(self.get(identifier))]
        self._toolsets.clear()

    def list_tools(self, category: str | None = None) -> list[Tool]:
        """By name, then oldest to newest version (``v2`` before ``v10``)."""
        tools = sorted(self._tools.values(), key=lambda t: (t.name, version_order(t.version)))
        return [t for t in tools if category is None or t.category == category]

    def categories(self) -> list[str]:
        return sorted({t.category for t in self._tools.values()})

    def get(self, identifier: str) -> Tool:
        """Find by ``name:version`` or by bare name (the newest version)."""
        if identifier in self._tools:
            return self._tools[identifier]
        matches = [t for t in self._tools.values() if t.name == identifier]
        if not matches:
            known = ", ".join(self._tools) or "none"
            raise NotFoundError(f"unknown tool {identifier!r} (available: {known})", code="tool_not_found")
        return max(matches, key=lambda t: version_order(t.version))

    def toolset(self, names: Iterable[str] | None = None) -> Toolset:
        """The newest version of each tool, or exactly the named ones. Toolsets never change, so
        runs that ask for the same tools share one (and its tool descriptions)."""
        key = None if names is None else tuple(names)
        found = self._toolsets.get(key)
        if found is None:
            found = self._toolsets[key] = self._make_toolset(key)
        return found

    def _make_toolset(self, names: tuple[str, ...] | None) -> Toolset:
        if names is None:
            latest: dict[str, Tool] = {}
            for tool in sorted(self._tools.values(), key=tool_id):  # the order models are shown
                current = latest.get(tool.name)
                if current is None or version_order(tool.version) > version_order(current.version):
                    latest[tool.name] = tool
            return self._toolset(latest.values())
        return self._toolset(self.get(n) for n in names)

    def _toolset(self, tools: Iterable[Tool]) -> Toolset:
        return Toolset(tools, call_timeout=self.call_timeout, max_output_chars=self.max_output_chars)

    async def execute(self, identifier: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Run one tool directly. Bad arguments raise :class:`ToolArgumentError` before it runs."""
        tool = self.get(identifier)
        tool.validate_arguments(arguments)
        call = ToolCall(id=new_call_id("tool"), name=tool.name, arguments=arguments)
        toolset = self._toolset([tool])
        return await toolset.execute(call, ToolContext(run_id="", call_id=call.id))
