"""Observing tools by wrapping them: how long validation and the work itself took.

The event log knows when a tool call started and ended, not how that time split between checking
the arguments and running the tool. :class:`InstrumentedTool` wraps any tool (built-in, plugin,
MCP) and notes both, keyed by run and call id, in :data:`TIMINGS`; observation takes them when
the call's result is committed and keeps them in the store, where the trace of the run — derived
from its events — finds them for the ``tool.validate`` and ``tool.run`` children of its
``execute_tool`` span. Nothing else changes: the wrapper answers every question about the tool
exactly as the tool does.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any

from agentstage.core.records import ToolTiming as ToolTiming
from agentstage.core.tools import Tool, ToolContext


class TimingBook:
    """Timings waiting for their span; bounded, so calls whose spans are never built cannot pile up."""

    def __init__(self, capacity: int = 10_000):
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], ToolTiming] = OrderedDict()

    def put(self, timing: ToolTiming) -> None:
        self._entries[(timing.run_id, timing.call_id)] = timing
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def take(self, run_id: str, call_id: str) -> ToolTiming | None:
        return self._entries.pop((run_id, call_id), None)


TIMINGS = TimingBook()
# Validation and the run happen back to back in one task (Toolset.execute); the validation's
# times wait here until the run, which knows the call id, files both.
_validated: ContextVar[tuple[int, int] | None] = ContextVar("agentstage_tool_validated", default=None)


class InstrumentedTool:
    """A tool that notes how long its validation and its run took."""

    def __init__(self, tool: Tool):
        self.wrapped = tool

    @property
    def name(self) -> str:
        return self.wrapped.name

    @property
    def version(self) -> str:
        return self.wrapped.version

    @property
    def description(self) -> str:
        return self.wrapped.description

    @property
    def category(self) -> str:
        return self.wrapped.category

    @property
    def parameters(self) -> dict[str, Any]:
        return self.wrapped.parameters

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def validate_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        start = time.time_ns()
        try:
            return self.wrapped.validate_arguments(arguments)
        finally:
            _validated.set((start, time.time_ns()))

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        validated = _validated.get()
        _validated.set(None)
        start = time.time_ns()
        failed = True
        try:
            result = await self.wrapped.run(arguments, context)
            failed = False
            return result
        finally:
            end = time.time_ns()
            if context.run_id and context.call_id:  # a tool run outside a run has no span to join
                checked = validated or (start, start)
                TIMINGS.put(ToolTiming(context.run_id, context.call_id, *checked, start, end, failed))


def instrument(tool: Tool) -> Tool:
    return tool if isinstance(tool, InstrumentedTool) else InstrumentedTool(tool)
