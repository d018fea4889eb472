"""The model protocol: one streaming method, everything else defaulted.

A provider yields :class:`TextDelta` chunks as text arrives, :class:`ToolCallChunk` when the
model asks for a tool, and exactly one :class:`ModelResponse` at the end. Wrappers that add
resilience yield :class:`RetryNotice` / :class:`FallbackNotice` so the orchestrator can record
each attempt as an event without knowing how retries work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from agentstage.core.messages import Message, ToolCall, Usage


class ToolSpec(BaseModel):
    """What a model is told about a tool: its name (no version), description and argument schema."""

    name: str
    description: str
    parameters: dict[str, Any]


class ModelRequest(BaseModel):
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    response_format: dict[str, Any] | None = Field(
        default=None, description="A JSON schema the answer must follow (structured output)."
    )
    grammar: str | None = Field(
        default=None,
        description="A GBNF grammar the answer must match, for providers that constrain decoding "
        "(llama.cpp); it is at least as strict as response_format, which other providers use.",
    )
    params: dict[str, Any] = Field(default_factory=dict)


class TextDelta(BaseModel):
    text: str


class ToolCallChunk(BaseModel):
    tool_call: ToolCall


class ModelResponse(BaseModel):
    message: Message
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str = "stop"
    provider: str = ""
    model: str = ""

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls


class RetryNotice(BaseModel):
    provider: str
    attempt: int
    code: str
    message: str
    delay: float


# Codes of a fallback past a provider the chain did not try: an env: secret it needs is not set,
# or its kind's own check refused it. Every other code is a provider that was tried and failed.
SKIPPED_CODE = "missing_secret"
UNUSABLE_CODE = "provider_unusable"
SKIP_CODES = frozenset({SKIPPED_CODE, UNUSABLE_CODE})


class FallbackNotice(BaseModel):
    from_provider: str
    to_provider: str
    code: str
    message: str


ModelChunk = TextDelta | ToolCallChunk | ModelResponse | RetryNotice | FallbackNotice


@runtime_checkable
class Model(Protocol):
    """What every provider implements.

    ``native_tools`` says whether the provider passes tool definitions to the model natively; when
    false, orchestrators ask for a JSON action through ``response_format`` instead.
    """

    provider: str
    model_name: str
    native_tools: bool

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]: ...


class ProviderKind(Protocol):
    """A kind of provider (the ``type`` of a provider in the configuration): how to build its model
    for one run, and whether it can be used at all. Plugins add kinds through the
    ``agentstage.providers`` entry-point group; :class:`BaseProviderKind` defaults ``check``."""

    name: str

    def build(self, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
        """A model for provider ``name`` (its configured ``options``), with the profile's ``params``."""
        ...

    def check(self, options: dict[str, Any]) -> str | None:
        """None when a provider with these options can be used; otherwise why not, in one line.
        Asked by ``/health/ready`` and, at most once a second, by the chains of runs (a refused
        provider is skipped), on the event loop: read options and the environment, no network."""
        ...


class BaseProviderKind:
    """Implement :meth:`build`; :meth:`check` says every configuration is usable."""

    name: str = ""

    def build(self, name: str, model: str | None, options: dict[str, Any], params: dict[str, Any]) -> Model:
        raise NotImplementedError

    def check(self, options: dict[str, Any]) -> str | None:
        return None
