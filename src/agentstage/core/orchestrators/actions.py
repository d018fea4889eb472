"""Structured actions for models without native tool calls.

The react loop asks such a model for one JSON object, ``{"tool": ..., "arguments": ...}`` or
``{"answer": ...}``, constrained by a JSON schema whose tool names are exactly the registered
ones, so a grammar-constrained model can only produce a well-formed action.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from agentstage.core.events import PlanStep
from agentstage.core.ids import new_call_id
from agentstage.core.messages import ToolCall
from agentstage.core.tools import Toolset
from agentstage.errors import ModelError


class Answer(BaseModel):
    text: str


_GRAMMAR_UNFRIENDLY = frozenset({"maxLength", "minLength", "pattern", "format", "maxItems", "maxProperties"})


def grammar_friendly(schema: Any) -> Any:
    """Drop constraints that explode a llama.cpp grammar (a ``maxLength`` of 10,000 becomes 10,000
    nested rules). The tool still validates its arguments strictly, so nothing is lost."""
    if isinstance(schema, dict):
        return {k: grammar_friendly(v) for k, v in schema.items() if k not in _GRAMMAR_UNFRIENDLY}
    if isinstance(schema, list):
        return [grammar_friendly(item) for item in schema]
    return schema


def _tool_option(name: str, parameters: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    properties = {**extra, "tool": {"const": name}, "arguments": grammar_friendly(parameters)}
    return {
        "type": "object",
        "properties": properties,
        "required": [*extra, "tool", "arguments"],
        "additionalProperties": False,
    }


def action_schema(tools: Toolset) -> dict[str, Any]:
    options = [_tool_option(t.name, t.parameters, {}) for t in tools]
    options.append(
        {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
    )
    return {"anyOf": options}


def plan_schema(tools: Toolset, max_steps: int) -> dict[str, Any]:
    description = {"description": {"type": "string"}}
    options = [_tool_option(t.name, t.parameters, description) for t in tools]
    options.append(
        {
            "type": "object",
            "properties": description,
            "required": ["description"],
            "additionalProperties": False,
        }
    )
    steps = {"type": "array", "minItems": 1, "maxItems": max_steps, "items": {"anyOf": options}}
    return {
        "type": "object",
        "properties": {"steps": steps},
        "required": ["steps"],
        "additionalProperties": False,
    }


def _load_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelError(
            f"the model's {what} is not valid JSON ({error.msg} at position {error.pos}): {text[:200]!r}",
            code="invalid_action",
        ) from None
    if not isinstance(value, dict):
        raise ModelError(
            f"the model's {what} must be a JSON object, got {text[:200]!r}", code="invalid_action"
        )
    return value


def parse_action(text: str, tools: Toolset) -> ToolCall | Answer:
    """Turn a model's JSON text into a tool call or an answer; anything else is ``invalid_action``."""
    value = _load_object(text.strip(), "action")
    if "answer" in value and "tool" not in value:
        answer = value["answer"]
        return Answer(text=answer if isinstance(answer, str) else json.dumps(answer))
    name = value.get("tool")
    if not isinstance(name, str) or tools.get(name) is None:
        known = ", ".join(tools.names()) or "none"
        raise ModelError(
            f"the model asked for unknown tool {name!r} (available: {known})", code="invalid_action"
        )
    arguments = value.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ModelError(f"tool arguments must be an object, got {arguments!r}", code="invalid_action")
    return ToolCall(id=new_call_id("tool"), name=name, arguments=arguments)


def parse_plan(text: str, tools: Toolset, max_steps: int) -> list[PlanStep]:
    value = _load_object(text.strip(), "plan")
    raw_steps = value.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ModelError(f"the plan has no steps: {text[:200]!r}", code="invalid_action")
    steps: list[PlanStep] = []
    for index, raw in enumerate(raw_steps[:max_steps], start=1):
        if not isinstance(raw, dict):
            raise ModelError(f"plan step {index} is not an object: {raw!r}", code="invalid_action")
        tool = raw.get("tool")
        if tool in ("", "none"):
            tool = None
        if tool is not None and (not isinstance(tool, str) or tools.get(tool) is None):
            raise ModelError(f"plan step {index} names unknown tool {tool!r}", code="invalid_action")
        arguments = raw.get("arguments") or {}
        steps.append(
            PlanStep(
                id=index,
                description=str(raw.get("description", "")).strip() or f"step {index}",
                tool=tool,
                arguments=arguments if isinstance(arguments, dict) else {},
            )
        )
    return steps
