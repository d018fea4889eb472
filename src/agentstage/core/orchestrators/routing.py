"""``auto`` mode: pick chat, react or planner from the input and the tools available.

A rule, not a model call: it is instant, deterministic (so a replay picks the same mode) and its
reason is recorded in ``run.started`` for the user to see. The tools it matched also tell react
that a tool call is required before answering (see ``routed_tools``): a small model left to
choose would often answer from memory, and wrongly.
"""

from __future__ import annotations

import re

from agentstage.core.tools import Toolset
from agentstage.types import Mode

_NUMBER = r"-?\d+(?:[.,]\d+)?"
_ARITHMETIC = re.compile(
    rf"{_NUMBER}\s*(?:[-+*/^%x\u00d7\u00f7]|\*\*)\s*\(?\s*{_NUMBER}"
    rf"|{_NUMBER}\s*(?:plus|minus|times|multiplied by|divided by|over|to the power of|mod|modulo)\s*{_NUMBER}"
    rf"|\b(?:sqrt|square root|cube root|log|ln|sin|cos|tan|factorial)\b|{_NUMBER}\s*(?:squared|cubed|factorial|!)"
    rf"|{_NUMBER}\s*(?:%|percent)\s+of\s+{_NUMBER}|\baverage of\s+{_NUMBER}",
    re.I,
)
_MULTI_STEP = re.compile(
    r"\b(then|after that|afterwards|step by step|first\b.*\bthen|plan|and also|finally)\b", re.I | re.S
)


def _words(text: str) -> set[str]:
    found = set()
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        found.add(word)
        if len(word) > 3 and word.endswith("s"):
            found.add(word[:-1])
    return found


_DATE = re.compile(r"\b\d{4}-\d{1,2}(?:-\d{1,2})?\b")


def routed_tools(text: str, tools: Toolset) -> list[str]:
    """The tools the input calls for, by their keywords (and arithmetic for ``math.calculate``)."""
    words = _words(text)
    matched = set()
    arithmetic = bool(_ARITHMETIC.search(_DATE.sub(" ", text)))
    for tool in tools:
        keywords = {k.lower() for k in getattr(tool, "keywords", ())} | {tool.category}
        if tool.name == "math.calculate":
            if arithmetic or (words & keywords and len(re.findall(r"\d+", text)) >= 1):
                matched.add(tool.name)
        elif words & keywords:
            matched.add(tool.name)
    # Numbers with an operator are arithmetic even when a data word appears ("total of 12 + 7").
    if arithmetic and "math.calculate" in matched and len(matched) > 1 and not _data_question(text):
        matched = {"math.calculate"}
    return sorted(matched)


def _data_question(text: str) -> bool:
    return bool(re.search(r"\b(how many|which|top|per|each|most|least|list|show)\b", text, re.I))


def several_steps(text: str) -> bool:
    """Does the input ask for one thing after another ("…, then …")?"""
    return bool(_MULTI_STEP.search(text))


def choose_mode(text: str, tools: Toolset) -> tuple[Mode, str]:
    """Return the mode and a one-line reason for it."""
    if len(tools) == 0:
        return Mode.CHAT, "no tools are available"
    matched = routed_tools(text, tools)
    if not matched:
        return Mode.CHAT, "the input does not call for a tool"
    if several_steps(text):
        return Mode.PLANNER, f"several steps that use tools ({', '.join(matched)})"
    return Mode.REACT, f"the input calls for tools ({', '.join(matched)})"
