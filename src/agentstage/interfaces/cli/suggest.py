"""Values offered by shell completion: modes, profiles, formats, run ids and tool names.

Completion runs on every Tab press, so a suggestion that cannot be computed (a broken config, a
locked store) yields nothing rather than an error printed into the user's command line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Suggestions = list[tuple[str, str]]


def _quietly(produce: Callable[[], Suggestions]) -> Suggestions:
    try:
        return produce()
    except Exception:  # completion must never print a traceback into the shell
        return []


def _matching(pairs: Suggestions, incomplete: str) -> Suggestions:
    return [(value, help_text) for value, help_text in pairs if value.startswith(incomplete)]


def complete_modes(incomplete: str) -> Suggestions:
    modes = [
        ("auto", "pick chat, react or planner from the input"),
        ("chat", "answer directly, no tools"),
        ("react", "think, call tools, observe, repeat"),
        ("planner", "make a plan of steps, then run them"),
    ]
    return _matching(modes, incomplete)


def complete_profiles(incomplete: str) -> Suggestions:
    def produce() -> Suggestions:
        from agentstage.settings import load_settings_or_defaults

        settings, _ = load_settings_or_defaults()
        return [(name, profile.description) for name, profile in settings.profiles.items()]

    return _matching(_quietly(produce), incomplete)


def complete_tools(incomplete: str) -> Suggestions:
    def produce() -> Suggestions:
        from agentstage.runtime.wiring import tool_catalog
        from agentstage.settings import load_settings_or_defaults

        settings, _ = load_settings_or_defaults()
        tools = tool_catalog(settings).list_tools(None)
        return [(tool.name, tool.description.split("\n")[0]) for tool in tools]

    return _matching(_quietly(produce), incomplete)


def complete_run_ids(incomplete: str) -> Suggestions:
    """``last`` and the most recent runs, each with the start of its input."""

    async def recent() -> list[Any]:
        from agentstage.runtime.wiring import build_service
        from agentstage.settings import load_settings_or_defaults

        settings, _ = load_settings_or_defaults()
        async with build_service(settings) as service:
            return await service.list_runs(limit=50)

    def produce() -> Suggestions:
        import asyncio

        runs = asyncio.run(recent())
        suggestions = [("last", "the most recent run")]
        suggestions += [(run.id, f"{run.status.value}: {run.input[:50]}") for run in runs]
        return suggestions

    return _matching(_quietly(produce), incomplete)


def complete_formats(*choices: str) -> Callable[[str], Suggestions]:
    def complete(incomplete: str) -> Suggestions:
        return _matching([(choice, "") for choice in choices], incomplete)

    return complete
