"""Tools that installed plugins add through the ``agentstage.tools`` entry-point group.

An entry point may name a tool (an instance, or a function made into one with ``@tool``), a tool
class (made with no arguments), or a function that returns a tool or a list of tools. A plugin that
fails to load is logged and skipped: it never stops the CLI or the server.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from importlib.metadata import entry_points
from typing import Any

from agentstage.core.tools import Tool, check_tool_name

log = logging.getLogger("agentstage.tools")
ENTRY_POINT_GROUP = "agentstage.tools"


def plugin_tools(reserved: Collection[str] = ()) -> list[Tool]:
    """The installed plugins' tools. A name in ``reserved`` (the built-in tools') is refused: a
    plugin's ``math.calculate`` at a higher version would otherwise take over every run that calls
    the built-in by name, without a word. A refused tool is skipped alone, with one log line; the
    other tools of its entry point are kept."""
    found: list[Tool] = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            tools = list(_tools_from(entry.load()))
        except Exception as error:  # a broken plugin must not break the product
            log.warning(
                "tool plugin %r (%s) not loaded: %s: %s", entry.name, entry.value, type(error).__name__, error
            )
            continue
        for tool in tools:
            try:
                check_tool_name(tool.name)
                if tool.name in reserved:
                    raise ValueError(
                        f"{tool.name!r} is the name of a built-in tool; give the plugin's tool its own"
                    )
            except Exception as error:
                log.warning(
                    "tool %r of plugin %r (%s) skipped: %s", tool.name, entry.name, entry.value, error
                )
                continue
            found.append(tool)
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
        if isinstance(made, Tool):
            return [made]
        if not isinstance(made, Iterable) or isinstance(made, str | bytes | dict):
            raise TypeError(f"it returned {type(made).__name__}, not a tool or a list of tools")
        tools = list(made)
        for item in tools:
            if not isinstance(item, Tool):
                raise TypeError(f"{type(item).__name__} is not a tool")
        return tools
    raise TypeError(f"{type(loaded).__name__} is neither a tool nor a function that makes tools")
