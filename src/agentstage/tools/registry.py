"""The tool registry: every tool by ``name:version``, with its category.

A run gets a :class:`~agentstage.core.tools.Toolset` drawn from here; doors list, describe and
test tools through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agentstage.core.tools import Tool, Toolset, tool_id
from agentstage.errors import NotFoundError


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()):
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        self._tools[tool_id(tool)] = tool

    def unregister(self, identifier: str) -> None:
        del self._tools[tool_id(self.get(identifier))]

    def list(self, category: str | None = None) -> list[Tool]:
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

    def toolset(self, names: Iterable[str] | None = None, *, call_timeout: float = 30.0) -> Toolset:
        if names is None:
            latest: dict[str, Tool] = {}
            for tool in self.list():
                latest[tool.name] = tool
            return Toolset(latest.values(), call_timeout=call_timeout)
        return Toolset((self.get(n) for n in names), call_timeout=call_timeout)


def builtin_tools(sql_database: Path | None, *, sql_max_rows: int = 200, sql_timeout: float = 5.0) -> list[Tool]:
    from agentstage.tools.math_calculate import MathCalculate
    from agentstage.tools.sql_query import SqlQuery

    tools: list[Tool] = [MathCalculate()]
    if sql_database is not None:
        tools.append(SqlQuery(sql_database, max_rows=sql_max_rows, timeout=sql_timeout))
    return tools
