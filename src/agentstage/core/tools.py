"""The tool protocol, the context a tool runs in, and the toolset that runs calls safely.

A bad argument or an exception inside a tool never crashes a run: :meth:`Toolset.execute` turns
it into a :class:`ToolOutcome` carrying an error, which the orchestrator records as a
``tool.result`` error and feeds back to the model. Whatever a tool returns is made JSON-safe
before it is recorded (see :mod:`agentstage.core.jsonsafe`): an output that cannot be recorded
at all fails that call with ``tool_output_invalid``, never the store or another run.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from agentstage.core.events import ErrorInfo
from agentstage.core.jsonsafe import UnsafeOutput, json_safe
from agentstage.core.messages import ToolCall
from agentstage.core.model import ToolSpec
from agentstage.errors import AgentstageError, ConfigError, ToolArgumentError, ToolError


@dataclass
class ToolContext:
    """Handed to every tool call: who is calling, how to notice a cancel, and when time is up."""

    run_id: str
    call_id: str = ""
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    deadline: float | None = None  # time.monotonic() value

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    @property
    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()


@runtime_checkable
class Tool(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def category(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    def validate_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]: ...

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any: ...


ArgumentsModel = TypeVar("ArgumentsModel", bound=BaseModel)


_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
MAX_WIRE_NAME = 64  # what OpenAI and Anthropic accept in a tool name


def to_wire_name(name: str) -> str:
    """Model APIs allow only ``[A-Za-z0-9_-]`` in tool names, so ``math.calculate`` → ``math__calculate``."""
    return name.replace(".", "__")


def from_wire_name(name: str) -> str:
    return name.replace("__", ".")


def check_tool_name(name: str) -> None:
    """Refuse a name that no model API could be sent, or that would come back from one changed:
    letters, digits, ``_`` and ``-``, in parts joined by dots (``math.calculate``)."""
    wire = to_wire_name(name)
    problem = None
    if not _TOOL_NAME.fullmatch(name):
        problem = "use letters, digits, '_' and '-', in parts joined by '.'"
    elif from_wire_name(wire) != name:
        problem = "'__' is how a '.' is sent to a model, so it cannot be part of a name"
    elif len(wire) > MAX_WIRE_NAME:
        problem = f"it is longer than the {MAX_WIRE_NAME} characters a model API accepts"
    if problem is not None:
        raise ConfigError(f"tool name {name!r} cannot be used: {problem}")


def tool_id(tool: Tool) -> str:
    return f"{tool.name}:{tool.version}"


def validation_details(error: ValidationError) -> list[dict[str, Any]]:
    """Field-by-field errors in a stable shape: ``{"field": "a.b", "message": ..., "type": ...}``."""
    return [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "(root)",
            "message": item["msg"],
            "type": item["type"],
        }
        for item in error.errors(include_url=False)
    ]


def parse_arguments(model: type[ArgumentsModel], arguments: dict[str, Any], tool: str) -> ArgumentsModel:
    """A tool call's arguments, validated as the JSON the model sent them in.

    Strict, as the JSON schema promises (``"5"`` is not an integer), and in JSON terms: a date, an
    enum member, a UUID or a tuple arrives as the string or array its schema asks for, which
    strict validation of Python values would refuse."""
    try:
        text = json.dumps(arguments, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ToolArgumentError(f"invalid arguments for {tool}: not JSON ({error})") from None
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as error:
        details = validation_details(error)
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ToolArgumentError(
            f"invalid arguments for {tool}: {summary}", details={"errors": details}
        ) from None


@functools.cache
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """JSON schemas are costly to build and never change for a class: build each once."""
    return model.model_json_schema()


class ArgumentsTool(ABC):
    """A tool whose arguments are a pydantic model, which gives both its JSON schema and validation.

    Validation is strict (``"5"`` is not an integer), matching what the JSON schema promises.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "v1"
    description: ClassVar[str] = ""
    category: ClassVar[str] = "general"
    Arguments: ClassVar[type[BaseModel]]

    @property
    def parameters(self) -> dict[str, Any]:
        return _schema_of(self.Arguments)

    def validate_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return parse_arguments(self.Arguments, arguments, f"{self.name}:{self.version}").model_dump()

    @abstractmethod
    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Do the work; ``arguments`` are already validated."""


@dataclass
class ToolOutcome:
    output: Any = None
    error: ErrorInfo | None = None
    latency_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def for_model(self, limit: int = 4000) -> str:
        """The text a model sees: the JSON output, or the error so the model can correct itself."""
        if self.error is not None:
            return f"ERROR ({self.error.code}): {self.error.message}"
        text = self.output if isinstance(self.output, str) else json.dumps(self.output, default=str)
        return text if len(text) <= limit else text[:limit] + " …(truncated)"


class Toolset:
    """The tools a run may use, addressed by name; executes calls with validation and a deadline."""

    def __init__(
        self, tools: Iterable[Tool] = (), *, call_timeout: float = 30.0, max_output_chars: int = 262_144
    ):
        self._tools: dict[str, Tool] = {tool.name: tool for tool in tools}
        self.call_timeout = call_timeout
        self.max_output_chars = max_output_chars
        self._specs: list[ToolSpec] | None = None

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name.split(":", 1)[0])

    def specs(self) -> list[ToolSpec]:
        """What models are told about these tools (made once: a toolset never changes)."""
        if self._specs is None:
            self._specs = [
                ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
                for t in self._tools.values()
            ]
        return list(self._specs)

    def qualified(self, name: str) -> str:
        tool = self.get(name)
        return tool_id(tool) if tool else name

    async def execute(self, call: ToolCall, context: ToolContext) -> ToolOutcome:
        started = time.perf_counter()
        outcome = await self._execute(call, context)
        outcome.latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return outcome

    async def _execute(self, call: ToolCall, context: ToolContext) -> ToolOutcome:
        tool = self.get(call.name)
        if tool is None:
            known = ", ".join(self.names()) or "none"
            message = f"unknown tool {call.name!r} (available: {known})"
            return ToolOutcome(error=ErrorInfo(code="tool_not_found", message=message))
        try:
            arguments = tool.validate_arguments(call.arguments)
            async with asyncio.timeout(self._timeout_for(context)):
                output = await tool.run(arguments, context)
        except AgentstageError as error:
            return ToolOutcome(error=ErrorInfo(code=error.code, message=error.message))
        except TimeoutError:
            message = f"{tool_id(tool)} did not finish within {self._timeout_for(context):.1f}s"
            return ToolOutcome(error=ErrorInfo(code="tool_timeout", message=message))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a tool's own bug must not end the run
            message = f"{tool_id(tool)} raised {type(error).__name__}: {error}"
            return ToolOutcome(error=ErrorInfo(code=ToolError.default_code, message=message))
        try:
            safe, _ = json_safe(output, max_string=self.max_output_chars)
        except (UnsafeOutput, RecursionError) as error:
            message = f"{tool_id(tool)} returned an output that cannot be recorded: {error}"
            return ToolOutcome(error=ErrorInfo(code="tool_output_invalid", message=message))
        return ToolOutcome(output=safe)

    def _timeout_for(self, context: ToolContext) -> float:
        remaining = context.remaining()
        return self.call_timeout if remaining is None else min(self.call_timeout, remaining)
