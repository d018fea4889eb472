"""The scripted provider: a real provider that answers from a YAML/JSON script.

It is the deterministic stand-in for remote models in tests and demos. A script is a list of
responses consumed in order (one per model call of a run), plus optional rules chosen by a regex
on the last user message::

    native_tools: true            # pass tools natively (like OpenAI); false = JSON actions
    context_window: 2000          # optional: a window in tokens (4 characters each), enforced
    repeat_last: true             # when the list runs out, keep giving the last response
    responses:
      - text: "Let me check."     # streamed in word-sized deltas (or give `deltas: [...]`)
        tool_calls: [{name: math.calculate, arguments: {expression: "2+2"}}]
        usage: {input_tokens: 12, output_tokens: 4}
        delay: 0.1                # seconds before the first chunk
        delta_delay: 0.01         # seconds between deltas
      - error: {code: rate_limited, message: "slow down", retryable: true, retry_after: 0.2}
        times: 2                  # this entry answers two calls
      - json: {"answer": "4"}     # text = the JSON of this value
    rules:
      - match: "capital of France"
        text: "Paris."
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from agentstage.core.ids import new_call_id
from agentstage.core.messages import Message, ToolCall, Usage
from agentstage.core.model import ModelChunk, ModelRequest, ModelResponse, TextDelta, ToolCallChunk
from agentstage.errors import ConfigError, ModelError


class ScriptedError(BaseModel):
    code: str = "model_error"
    message: str = "scripted failure"
    retryable: bool = False
    retry_after: float | None = None


class ScriptedToolCall(BaseModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class ScriptedResponse(BaseModel):
    match: str | None = None
    text: str | None = None
    deltas: list[str] | None = None
    json_value: Any = Field(default=None, alias="json")
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    usage: Usage | None = None
    delay: float = 0.0
    delta_delay: float = 0.0
    error: ScriptedError | None = None
    finish_reason: str | None = None
    times: int = Field(default=1, ge=1)

    def pieces(self) -> list[str]:
        if self.deltas is not None:
            return self.deltas
        if self.json_value is not None:
            return [json.dumps(self.json_value)]
        return re.findall(r"\S+\s*|\s+", self.text or "")


class Script(BaseModel):
    native_tools: bool = True
    repeat_last: bool = True
    model: str = "scripted-model"
    context_window: int | None = Field(default=None, ge=16)
    responses: list[ScriptedResponse] = Field(default_factory=list)
    rules: list[ScriptedResponse] = Field(default_factory=list)

    @classmethod
    def load(cls, source: str | Path | dict[str, Any]) -> Script:
        if isinstance(source, dict):
            data: Any = source
        else:
            path = Path(source).expanduser()
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except OSError as error:
                raise ConfigError(f"cannot read script {str(path)!r}: {error.strerror}") from None
            except yaml.YAMLError as error:
                raise ConfigError(f"script {str(path)!r} is not valid YAML/JSON: {error}") from None
        try:
            return cls.model_validate(data or {})
        except ValidationError as error:
            raise ConfigError(f"invalid script: {error}") from None


class ScriptedModel:
    """One instance per run: its position in the script is that run's own."""

    def __init__(self, script: Script, provider: str = "scripted", model_name: str | None = None):
        self.script = script
        self.provider = provider
        self.model_name = model_name or script.model
        self.native_tools = script.native_tools
        self.context_window = script.context_window
        self._queue = [entry for entry in script.responses for _ in range(entry.times)]
        self._position = 0

    def _next(self, request: ModelRequest) -> ScriptedResponse:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        for rule in self.script.rules:
            if rule.match and re.search(rule.match, last_user, re.I):
                return rule
        if self._position < len(self._queue):
            self._position += 1
            return self._queue[self._position - 1]
        if self.script.repeat_last and self._queue:
            return self._queue[-1]
        raise ModelError(
            f"scripted provider {self.provider!r} has no response left for call {self._position + 1}",
            code="script_exhausted",
            provider=self.provider,
        )

    def count_tokens(self, messages: list[Message]) -> int:
        """A stand-in tokenizer: four characters a token, four tokens of framing per message."""
        return sum(len(m.content) // 4 + 4 for m in messages)

    def _check_window(self, request: ModelRequest) -> None:
        if self.context_window is None:
            return
        needed = self.count_tokens(request.messages) + int(request.params.get("max_tokens", 0))
        if needed > self.context_window:
            raise ModelError(
                f"{self.provider}: the request needs {needed} tokens, over the window of {self.context_window}",
                code="context_exceeded",
                provider=self.provider,
            )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self._check_window(request)
        entry = self._next(request)
        if entry.delay:
            await asyncio.sleep(entry.delay)
        if entry.error is not None:
            raise ModelError(
                f"{self.provider}: {entry.error.message}",
                code=entry.error.code,
                retryable=entry.error.retryable,
                retry_after=entry.error.retry_after,
                provider=self.provider,
            )
        pieces = entry.pieces()
        for index, piece in enumerate(pieces):
            if index and entry.delta_delay:
                await asyncio.sleep(entry.delta_delay)
            yield TextDelta(text=piece)
        calls = [
            ToolCall(id=c.id or new_call_id("tool"), name=c.name, arguments=c.arguments)
            for c in entry.tool_calls
        ]
        for call in calls:
            yield ToolCallChunk(tool_call=call)
        text = "".join(pieces)
        usage = entry.usage or Usage(
            input_tokens=sum(len(m.content) for m in request.messages) // 4 + 1,
            output_tokens=max(1, len(pieces)),
        )
        yield ModelResponse(
            message=Message.assistant(text, calls),
            usage=usage,
            finish_reason=entry.finish_reason or ("tool_calls" if calls else "stop"),
            provider=self.provider,
            model=self.model_name,
        )
