"""Tools that installed plugins add through the ``agentstage.tools`` entry-point group.

An entry point may name a tool (an instance, or a function made into one with ``@tool``), a tool
class (made with no arguments), or a function that returns a tool or a list of tools. A plugin that
fails to load is logged and skipped: it never stops the CLI or the server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from agentstage.core.tools import Tool, check_tool_name

log = logging.getLogger("agentstage.tools")
ENTRY_POINT_GROUP = "agentstage.tools"


def plugin_tools() -> list[Tool]:
    found: list[Tool] = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            tools = list(_tools_from(entry.load()))
            for tool in tools:
                check_tool_name(tool.name)
            found.extend(tools)
        except Exception as error:  # a broken plugin must not break the product
            log.warning(
                "tool plugin %r (%s) not loaded: %s: %s", entry.name, entry.value, type(error).__name__, error
            )
    return found


def _tools_from(loaded: Any) -> Iterable[Tool]:
    if isinstance(loaded, Tool):
        return [loaded]
    if isinstance(loaded, type):
        made = loaded()
        if isinstance(made, Tool):
            return [made]
        raise TypeError(f"{loaded.__name__} does not make a tool")
    if callable(loaded):
        made = loaded()
        tools = [made] if isinstance(made, Tool) else list(made)
        for item in tools:
            if not isinstance(item, Tool):
                raise TypeError(f"{type(item).__name__} is not a tool")
        return tools
    raise TypeError(f"{type(loaded).__name__} is neither a tool nor a function that makes tools")
