"""``auto`` mode: pick chat, react or planner from the input and the tools available.

A rule, not a model call: it is instant, deterministic (so a replay picks the same mode) and its
reason is recorded in ``run.started`` for the user to see.
"""

from __future__ import annotations

import re

from agentstage.core.tools import Toolset
from agentstage.types import Mode

_ARITHMETIC = re.compile(r"\d\s*[-+*/^%x÷]\s*\(?\s*\d|\b(sqrt|log|sin|cos|percent(age)?)\b", re.I)
_MULTI_STEP = re.compile(
    r"\b(then|after that|afterwards|step by step|first\b.*\bthen|plan|and also|finally)\b", re.I | re.S
)


def _tool_matches(text: str, tools: Toolset) -> list[str]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    matched = []
    for tool in tools:
        keywords = set(getattr(tool, "keywords", ())) | {tool.category}
        if words & keywords:
            matched.append(tool.name)
    if _ARITHMETIC.search(text) and tools.get("math.calculate") is not None:
        matched.append("math.calculate")
    return sorted(set(matched))


def choose_mode(text: str, tools: Toolset) -> tuple[Mode, str]:
    """Return the mode and a one-line reason for it."""
    if len(tools) == 0:
        return Mode.CHAT, "no tools are available"
    matched = _tool_matches(text, tools)
    if not matched:
        return Mode.CHAT, "the input does not call for a tool"
    if _MULTI_STEP.search(text):
        return Mode.PLANNER, f"several steps that use tools ({', '.join(matched)})"
    return Mode.REACT, f"the input calls for tools ({', '.join(matched)})"
