"""The tool catalog: every tool by ``name:version``, with its category.

A run gets a :class:`~agentstage.core.tools.Toolset` drawn from here; doors list, describe and
test tools through it, never by importing a tool.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from agentstage.core.messages import ToolCall, new_call_id
from agentstage.core.tools import Tool, ToolContext, ToolOutcome, Toolset, tool_id
from agentstage.errors import NotFoundError


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


class ToolCatalog:
    def __init__(self, tools: Iterable[Tool] = (), *, call_timeout: float = 30.0):
        self.call_timeout = call_timeout
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        self._tools[tool_id(tool)] = tool

    def unregister(self, identifier: str) -> None:
        del self._tools[tool_id(self.get(identifier))]

    def list_tools(self, category: str | None = None) -> list[Tool]:
        tools = sorted(self._tools.values(), key=tool_id)
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
        return max(matches, key=lambda t: t.version)

    def toolset(self, names: Iterable[str] | None = None) -> Toolset:
        """The newest version of each tool, or exactly the named ones."""
        if names is None:
            latest: dict[str, Tool] = {}
            for tool in self.list_tools():
                latest[tool.name] = tool
            return Toolset(latest.values(), call_timeout=self.call_timeout)
        return Toolset((self.get(n) for n in names), call_timeout=self.call_timeout)

    async def execute(self, identifier: str, arguments: dict[str, Any]) -> ToolOutcome:
        """Run one tool directly. Bad arguments raise :class:`ToolArgumentError` before it runs."""
        tool = self.get(identifier)
        tool.validate_arguments(arguments)
        call = ToolCall(id=new_call_id("tool"), name=tool.name, arguments=arguments)
        toolset = Toolset([tool], call_timeout=self.call_timeout)
        return await toolset.execute(call, ToolContext(run_id="", call_id=call.id))
