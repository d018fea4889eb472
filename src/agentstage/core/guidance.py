"""What a tool can tell a small model beyond its JSON schema: examples and argument grammars.

A model without native tool calls is asked for a JSON action under a grammar (see
``core/orchestrators/grammar.py``). Tools may make that far more reliable by offering, optionally:

- ``action_examples()``: a few ``(question, arguments)`` pairs, shown to the model as worked
  examples (the ones closest to the user's input are picked);
- ``string_grammars(prefix)``: for string arguments, a GBNF grammar of the values that make sense
  (``sql.query`` derives one from its database: SELECT only, real tables and columns);
- ``quote(output)``: how its result reads inside an answer (a few rows, a number).

Tools that offer none of these still work: their schema alone constrains the action.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agentstage.core.tools import Tool


@dataclass(frozen=True)
class ToolExample:
    """One worked example of calling a tool: the question a user asked and the arguments to use."""

    input: str
    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)
    shape: str = ""  # examples of one shape differ only in names; a prompt shows one of each

    def action(self) -> str:
        return json.dumps({"tool": self.tool, "arguments": self.arguments}, ensure_ascii=False)


@dataclass(frozen=True)
class StringGrammar:
    """A GBNF grammar for the text of one string argument (without its JSON quotes).

    ``rules`` maps rule names to rule bodies; ``root`` is the rule the value starts at. Every name
    must start with the prefix the tool was given, so grammars of several tools can be combined.
    The text it allows must not contain ``"``, ``\\`` or control characters (it sits inside a
    JSON string as is).
    """

    root: str
    rules: dict[str, str]


def literal(text: str) -> str:
    """A GBNF literal that matches ``text`` exactly."""
    escaped = []
    for char in text:
        if char == "\\":
            escaped.append("\\\\")
        elif char == '"':
            escaped.append('\\"')
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\r":
            escaped.append("\\r")
        elif char == "\t":
            escaped.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\x{ord(char):02X}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def examples_of(tool: Tool) -> list[ToolExample]:
    provider = getattr(tool, "action_examples", None)
    return list(provider()) if callable(provider) else []


def string_grammars_of(tool: Tool, prefix: str) -> dict[str, StringGrammar]:
    provider = getattr(tool, "string_grammars", None)
    return dict(provider(prefix)) if callable(provider) else {}


def with_hints(tools: Iterable[Tool], text: str) -> str:
    """The question with the tools' hints about it appended (``(March 2025 = '2025-03')``), so a
    small model copies a value rather than converting it. Examples get the same treatment."""
    notes: list[str] = []
    for tool in tools:
        provider = getattr(tool, "hints", None)
        if callable(provider):
            notes += [note for note in provider(text) if note not in notes]
    return f"{text}\n({'; '.join(notes)})" if notes else text


def example_result(tool: Tool | None, example: ToolExample) -> str | None:
    """What the example's call returns, quoted, if the tool can say cheaply (else None)."""
    provider = getattr(tool, "example_output", None) if tool is not None else None
    if not callable(provider):
        return None
    try:
        output = provider(example.arguments)
    except Exception:  # an example that cannot run is shown without its result
        return None
    return None if output is None else quote(tool, output)


def quote(tool: Tool | None, output: Any, limit: int = 600) -> str:
    """The tool's result as it should read inside an answer."""
    custom = getattr(tool, "quote", None) if tool is not None else None
    text = custom(output) if callable(custom) else default_quote(output)
    text = " ".join(str(text).split()) if "\n" not in str(text) else str(text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def default_quote(output: Any) -> str:
    if isinstance(output, dict) and len(output) == 1:
        (value,) = output.values()
        return format_value(value)
    if isinstance(output, str | int | float) and not isinstance(output, bool):
        return format_value(output)
    return json.dumps(output, ensure_ascii=False, default=str)


def format_value(value: Any) -> str:
    """Numbers as a person writes them: no float noise (``27719.300000000003`` → ``27719.3``)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        if abs(value) < 0.01:
            return f"{value:.6g}"
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


_STOP_WORDS = frozenset(
    "a an the of is are was were be what which who whom how many much per by in on at for to from "
    "all there with has have had do does did me my i you your please tell show give find list "
    "and or".split()
)


_MONTHS = frozenset(
    "january february march april may june july august september october november december".split()
)


# Everyday words that mean the same thing in a question about data or arithmetic.
_SAME = {
    "sales": "revenue", "sale": "revenue", "spent": "revenue", "spend": "revenue", "value": "revenue",
    "spending": "revenue", "money": "revenue", "income": "revenue", "earned": "revenue",
    "earnings": "revenue", "turnover": "revenue", "items": "quantity", "item": "quantity",
    "units": "quantity", "unit": "quantity", "pieces": "quantity", "highest": "most", "largest": "most",
    "biggest": "most", "best": "most", "greatest": "most", "maximum": "most", "lowest": "least",
    "smallest": "least", "fewest": "least", "worst": "least", "minimum": "least", "each": "per",
    "every": "per", "number": "many", "count": "many", "mean": "average", "avg": "average",
    "multiplied": "times", "monthly": "month", "months": "month",
    "overview": "summarize", "summary": "summarize", "summarise": "summarize",
}  # fmt: skip
_SYMBOLS = {"*": " times ", "\u00d7": " times ", "+": " plus ", "/": " divided ", "\u00f7": " divided ",
            "%": " percent ", "^": " power ", "**": " power "}  # fmt: skip


def words(text: str) -> set[str]:
    """Content words, crudely singularised, for comparing a question with examples. Numbers are
    left out ("12 times 7" is like "9 times 8", not like "7 squared"), operators and common
    synonyms become one word ("17 * 23" is like "9 times 8"; "sold" like "sales"), and a month's
    name counts as the word "month" ("in March 2025" is like "in January 2024")."""
    quoted = re.findall(r"'([^']*)'", text)  # values in hints ('North'): the shape matters, not them
    for value in quoted:
        text = re.sub(rf"\b{re.escape(value)}\b", " ", text) if value else text
    text = text.lower().replace("**", _SYMBOLS["**"])
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    found = set()
    for word in re.findall(r"[a-z0-9]+", text):
        if word in _STOP_WORDS or word.isdigit():
            continue
        if word in _MONTHS:
            word = "month-name"
        word = _SAME.get(word, word)
        if len(word) > 3 and word.endswith("ies"):
            word = word[:-3] + "y"
        elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        found.add(_SAME.get(word, word))
    return found


def hinted(tools: Iterable[Tool], examples: Iterable[ToolExample]) -> list[ToolExample]:
    """The examples with their questions hinted like the user's (see :func:`with_hints`)."""
    tools = list(tools)
    return [replace(e, input=with_hints(tools, e.input)) for e in examples]


def nearest_examples(examples: Sequence[ToolExample], text: str, k: int = 3) -> list[ToolExample]:
    """The ``k`` examples whose questions share the most words with ``text`` (then the fewest
    other words, then the rarest shared ones), one per shape, the closest last: a small model
    copies the pattern it saw most recently, and three near-copies that differ in one column
    only confuse it."""
    if not examples:
        return []
    bags = [words(example.input) for example in examples]
    counts: dict[str, int] = {}
    for bag in bags:
        for word in bag:
            counts[word] = counts.get(word, 0) + 1
    query = words(text)

    def score(index: int) -> tuple[int, int, float]:
        shared = query & bags[index]
        rarity = sum(1.0 / counts[w] ** 0.5 for w in shared)
        return len(shared), -len(bags[index] - query), rarity

    chosen: list[int] = []
    shapes: set[str] = set()
    for index in sorted(range(len(examples)), key=score, reverse=True):
        shape = examples[index].shape
        if shape and shape in shapes:
            continue
        shapes.add(shape)
        chosen.append(index)
        if len(chosen) == k:
            break
    return [examples[i] for i in reversed(chosen)]


def unique(examples: Iterable[ToolExample]) -> list[ToolExample]:
    seen: set[str] = set()
    result = []
    for example in examples:
        if example.input not in seen:
            seen.add(example.input)
            result.append(example)
    return result
