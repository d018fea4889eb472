"""Tools from typed Python functions: the ``@tool`` decorator.

The function's signature is the tool's contract: its parameters (with their type hints, defaults
and ``Annotated[..., Field(description=...)]``) become the JSON schema the model sees and the
strict validation every call goes through; its docstring becomes the description. A parameter
typed :class:`~agentstage.core.tools.ToolContext` receives the call's context instead (run id,
cancellation signal, deadline). ``async def`` functions run on the event loop; plain functions run
in a worker thread so they never block it (a thread cannot be killed, so a plain function that
ignores its deadline keeps its thread until it returns; the call itself still ends at the deadline)::

    @tool(category="text")
    def word_count(text: Annotated[str, Field(description="The text to count.")]) -> int:
        \"\"\"Count the words in a text.\"\"\"
        return len(text.split())
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, create_model

from agentstage.core.tools import ToolContext, check_tool_name, parse_arguments
from agentstage.errors import ConfigError


class FunctionTool:
    """A :class:`~agentstage.core.tools.Tool` made from a function."""

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        version: str = "v1",
        category: str = "general",
        description: str | None = None,
    ):
        self.function = function
        self.name = name or function.__name__
        check_tool_name(self.name)
        if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
            raise ConfigError(
                f"tool {self.name!r}: a generator cannot be a tool; return the whole result instead"
            )
        self.version = version
        self.category = category
        self.description = description or _summary(function)
        self._context_parameter, self.Arguments = _arguments_model(function, self.name)
        self._is_async = inspect.iscoroutinefunction(function)
        functools.update_wrapper(self, function)

    @functools.cached_property
    def parameters(self) -> dict[str, Any]:
        return self.Arguments.model_json_schema()

    def validate_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        parsed = parse_arguments(self.Arguments, arguments, f"{self.name}:{self.version}")
        return {field: getattr(parsed, field) for field in type(parsed).model_fields}

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        keywords = dict(arguments)
        if self._context_parameter is not None:
            keywords[self._context_parameter] = context
        if self._is_async:
            return await self.function(**keywords)
        return await asyncio.to_thread(self.function, **keywords)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The decorated function stays callable as before."""
        return self.function(*args, **kwargs)


@overload
def tool(function: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    version: str = "v1",
    category: str = "general",
    description: str | None = None,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "v1",
    category: str = "general",
    description: str | None = None,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a tool from a typed function: ``@tool`` or ``@tool(name=..., category=...)``."""

    def wrap(target: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(target, name=name, version=version, category=category, description=description)

    return wrap(function) if function is not None else wrap


def _summary(function: Callable[..., Any]) -> str:
    doc = inspect.getdoc(function) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _arguments_model(function: Callable[..., Any], name: str) -> tuple[str | None, type[BaseModel]]:
    try:
        hints = get_type_hints(function, include_extras=True)
    except NameError as error:
        raise ConfigError(f"tool {name!r}: cannot resolve its type hints ({error})") from None
    context_parameter = None
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ConfigError(f"tool {name!r}: *args and **kwargs cannot be described to a model")
        hint = hints.get(parameter.name)
        if hint is None:
            raise ConfigError(f"tool {name!r}: parameter {parameter.name!r} needs a type hint")
        if hint is ToolContext:
            context_parameter = parameter.name
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hint, default)
    model: type[BaseModel] = create_model(
        f"{name.replace('.', '_')}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return context_parameter, model
