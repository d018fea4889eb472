"""Grammars (llama.cpp's GBNF) that make a structured action valid by construction.

Why our own builder rather than a JSON-schema converter: a JSON string in such converters may
contain raw newlines and control characters (which JSON forbids), allows free whitespace
between tokens (which a small model fills), and never ends a value early. Here every string
excludes control characters, the layout is fixed (``{"tool": "x", "arguments": {...}}`` with
exactly the spacing of ``json.dumps``, as in the examples the model is shown), and the
grammar is complete the moment the object closes, so generation stops there: one action per call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentstage.core.guidance import StringGrammar, literal, string_grammars_of
from agentstage.core.tools import Toolset

JSON_CHAR = r'[^"\\\x00-\x1F\x7F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
# Free answer text: no braces either, so a small model cannot wander into a second object.
ANSWER_CHAR = r'[^"\\{}\x00-\x1F\x7F] | "\\" (["\\/nt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
MAX_ARRAY_ITEMS = 8
MAX_DEPTH = 6


def json_literal(value: Any) -> str:
    """A GBNF literal for ``value`` written as ``json.dumps`` writes it."""
    return literal(json.dumps(value, ensure_ascii=False))


class Grammar:
    """Rules by name, ``root`` first; names are made unique as they are added."""

    def __init__(self) -> None:
        self.rules: dict[str, str] = {}

    def add(self, name: str, body: str) -> str:
        name = _clean(name)
        candidate, index = name, 1
        while candidate in self.rules and self.rules[candidate] != body:
            index += 1
            candidate = f"{name}-{index}"
        self.rules[candidate] = body
        return candidate

    def merge(self, fragment: StringGrammar) -> str:
        for name, body in fragment.rules.items():
            self.rules[name] = body
        return fragment.root

    def text(self, root: str) -> str:
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items() if name != "root"]
        return "\n".join(lines) + "\n"

    # JSON values --------------------------------------------------------------------------------

    def string(self) -> str:
        self.add("json-char", JSON_CHAR)
        return self.add("json-string", '"\\"" json-char* "\\""')

    def number(self, integer: bool = False) -> str:
        digits = self.add("json-int", '"-"? ("0" | [1-9] [0-9]{0,15})')
        if integer:
            return digits
        return self.add("json-number", f'{digits} ("." [0-9]{{1,12}})? ([eE] [-+]? [0-9]{{1,3}})?')

    def value(self, depth: int = 0) -> str:
        """Any JSON value, nested at most a few levels (for schemas that say nothing)."""
        if depth >= MAX_DEPTH:
            return self.add("json-scalar", f'{self.string()} | {self.number()} | "true" | "false" | "null"')
        inner = self.value(depth + 1)
        item = f"{self.string()} {literal(': ')} {inner}"
        obj = f'"{{" ({item} ({literal(", ")} {item})*)? "}}"'
        arr = f'"[" ({inner} ({literal(", ")} {inner})*)? "]"'
        body = f"{self.string()} | {self.number()} | {obj} | {arr} | " + '"true" | "false" | "null"'
        return self.add(f"json-value-{depth}", body)

    def schema(
        self,
        schema: Any,
        name: str,
        *,
        root: dict[str, Any],
        strings: dict[str, StringGrammar] | None = None,
        depth: int = 0,
    ) -> str:
        """A rule for values of a JSON schema (the subset tools use), compact layout."""
        if not isinstance(schema, dict) or depth > MAX_DEPTH:
            return self.value()
        if "$ref" in schema:
            return self.schema(
                _resolve(schema["$ref"], root), name, root=root, strings=strings, depth=depth + 1
            )
        if "const" in schema:
            return self.add(f"{name}-const", json_literal(schema["const"]))
        if "enum" in schema:
            return self.add(f"{name}-enum", " | ".join(json_literal(v) for v in schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [
                    self.schema(option, f"{name}-{i}", root=root, strings=strings, depth=depth + 1)
                    for i, option in enumerate(schema[key])
                ]
                return self.add(f"{name}-any", " | ".join(options))
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.schema(schema["allOf"][0], name, root=root, strings=strings, depth=depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            options = [
                self.schema({**schema, "type": k}, f"{name}-{k}", root=root, strings=strings, depth=depth)
                for k in kind
            ]
            return self.add(f"{name}-types", " | ".join(options))
        if kind == "object" or "properties" in schema:
            return self._object(schema, name, root=root, strings=strings, depth=depth)
        if kind == "array":
            item = self.schema(schema.get("items", {}), f"{name}-item", root=root, depth=depth + 1)
            most = min(int(schema.get("maxItems", MAX_ARRAY_ITEMS)), MAX_ARRAY_ITEMS)
            least = int(schema.get("minItems", 0))
            more = f"({literal(', ')} {item}){{0,{max(most - 1, 0)}}}"
            body = f'"[" {item} {more} "]"' if least >= 1 else f'"[" ({item} {more})? "]"'
            return self.add(f"{name}-array", body)
        if kind == "string":
            return self.string()
        if kind == "integer":
            return self.number(integer=True)
        if kind == "number":
            return self.number()
        if kind == "boolean":
            return self.add("json-bool", '"true" | "false"')
        if kind == "null":
            return self.add("json-null", '"null"')
        return self.value()

    def _object(
        self,
        schema: dict[str, Any],
        name: str,
        *,
        root: dict[str, Any],
        strings: dict[str, StringGrammar] | None,
        depth: int,
    ) -> str:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = [p for p in properties if p in set(schema.get("required") or [])]
        # A tool that guides its string arguments has said what matters: its optional arguments
        # stay out of the grammar, so a small model cannot pad an action with them.
        optional = [] if strings and required else [p for p in properties if p not in required]
        if not properties:
            return self.add("json-object", f'"{{" ({self.string()} {literal(": ")} {self.value()})? "}}"')

        def member(prop: str) -> str:
            custom = (strings or {}).get(prop)
            if custom is not None and depth == 0:
                value = f'"\\"" {self.merge(custom)} "\\""'
            else:
                value = self.schema(properties[prop], f"{name}-{prop}", root=root, depth=depth + 1)
            return f"{json_literal(prop)} {literal(': ')} {value}"

        parts = [member(p) for p in required]
        body = f" {literal(', ')} ".join(parts)
        for prop in optional:
            if body:
                body += f" ({literal(', ')} {member(prop)})?"
            else:
                body = f"({member(prop)})?"
        return self.add(f"{name}-object", f'"{{" {body} "}}"')


def _clean(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    return cleaned or "rule"


def _resolve(reference: str, root: dict[str, Any]) -> Any:
    node: Any = root
    for part in reference.lstrip("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


# Actions ------------------------------------------------------------------------------------------


def _tool_call(grammar: Grammar, tools: Toolset, name: str, extra: str = "") -> str:
    tool = tools.get(name)
    assert tool is not None
    key = _clean(name)
    strings = string_grammars_of(tool, f"s-{key}-")
    arguments = grammar.schema(tool.parameters, f"a-{key}", root=tool.parameters, strings=strings)
    head = literal('{"tool": ') + " " + json_literal(tool.name) + " " + literal(', "arguments": ')
    if extra:
        head = extra + " " + literal(', "tool": ') + " " + json_literal(tool.name)
        head += " " + literal(', "arguments": ')
    return grammar.add(f"call-{key}", f'{head} {arguments} "}}"')


def action_grammar(
    tools: Toolset, *, allowed: Sequence[str] | None = None, answer: str | Sequence[str] | None = "free"
) -> str:
    """One JSON action: a call of one of ``allowed`` (default: every tool), or an answer.

    ``answer`` is ``"free"`` (any text), a list of quotes (the answer must be one of them: the
    results of tools that succeeded) or ``None`` (a tool call is required).
    """
    grammar = Grammar()
    options = [
        _tool_call(grammar, tools, name) for name in (allowed if allowed is not None else tools.names())
    ]
    if answer == "free":
        grammar.add("answer-char", ANSWER_CHAR)
        options.append(grammar.add("answer", literal('{"answer": "') + ' answer-char+ "\\"}"'))
    elif answer:
        quotes = " | ".join(json_literal(q) for q in answer)
        options.append(grammar.add("answer", literal('{"answer": ') + f" ({quotes}) " + '"}"'))
    if not options:
        raise ValueError("an action grammar needs at least one tool or an answer")
    return grammar.text(" | ".join(options))


def plan_grammar(tools: Toolset, max_steps: int) -> str:
    """``{"steps": [...]}`` with 1..max_steps steps, each a tool call with a description."""
    grammar = Grammar()
    description = literal('{"description": ') + " " + grammar.string()
    calls = [_tool_call(grammar, tools, name, extra=description) for name in tools.names()]
    think = grammar.add("think-step", f'{description} "}}"')
    step = grammar.add("step", " | ".join([*calls, think]))
    more = f"({literal(', ')} {step}){{0,{max(max_steps - 1, 0)}}}"
    opening = literal('{"steps": [')
    return grammar.text(f'{opening} {step} {more} "]}}"')


def choice_grammar(quotes: Sequence[str], most: int = 3) -> str:
    """Plain text made of one to ``most`` of the given quotes, one per line (a synthesis that can
    only repeat what the tools returned)."""
    grammar = Grammar()
    item = grammar.add("quote", " | ".join(literal(q) for q in quotes))
    return grammar.text(f'{item} ("\\n" {item}){{0,{max(most - 1, 0)}}}')


def schema_grammar(schema: dict[str, Any]) -> str:
    """A grammar for any JSON value of ``schema`` (structured output without an action)."""
    grammar = Grammar()
    return grammar.text(grammar.schema(schema, "value", root=schema))
