"""Anthropic models through the official ``anthropic`` SDK (imported lazily): tool use, streaming, usage.

Structured output (``response_format``) is asked for as a forced tool call whose input schema is
the requested schema, which is how Anthropic models give guaranteed JSON. The 2.x SDK no longer
takes sampling parameters (``temperature``, ``top_p``, ``top_k``) as arguments; the API still
reads them from the request body, so they travel in ``extra_body``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from agentstage.core.messages import Message, ToolCall, Usage
from agentstage.core.model import ModelChunk, ModelRequest, ModelResponse, TextDelta, ToolCallChunk
from agentstage.core.tools import from_wire_name, to_wire_name
from agentstage.errors import ModelError
from agentstage.providers.sdk_clients import ClientCache
from agentstage.providers.wire import parse_arguments, resolve_secret, translate_sdk_error

STRUCTURED_TOOL = "structured_answer"
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
# The ``error.type`` of an error event sent in the middle of a stream, and what it means here.
STREAM_ERRORS = {
    "overloaded_error": ("provider_overloaded", True),
    "api_error": ("provider_error", True),
    "rate_limit_error": ("rate_limited", True),
    "authentication_error": ("auth_failed", False),
    "permission_error": ("auth_failed", False),
}


def _content(message: Message) -> Any:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}]
    if message.role == "assistant" and message.tool_calls:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
        blocks += [
            {"type": "tool_use", "id": c.id, "name": to_wire_name(c.name), "input": c.arguments}
            for c in message.tool_calls
        ]
        return blocks
    return message.content


def split_messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Anthropic takes the system prompt apart and tool results as user turns."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    converted = [
        {"role": "user" if m.role in ("user", "tool") else "assistant", "content": _content(m)}
        for m in messages
        if m.role != "system"
    ]
    return system, converted


class AnthropicModel:
    native_tools = True

    def __init__(
        self,
        model_name: str,
        *,
        provider: str = "anthropic",
        base_url: str | None = None,
        api_key: str | None = "env:ANTHROPIC_API_KEY",
        params: dict[str, Any] | None = None,
        timeout: float = 60.0,
        http_client: Any = None,
    ):
        self.provider = provider
        self.model_name = model_name
        self.base_url = base_url
        self.api_key_ref = api_key
        self.params = params or {}
        self.timeout = timeout
        self.http_client = http_client  # an ``httpx2.AsyncClient`` the caller owns (and closes)
        self._clients = ClientCache(self, owned=http_client is None)

    def _client(self) -> Any:
        """This model's SDK client, kept between calls (see providers/sdk_clients.py)."""
        key = resolve_secret(self.api_key_ref, provider=self.provider)
        base_url = resolve_secret(self.base_url, provider=self.provider)
        return self._clients.get((base_url or "", key or ""), lambda: self._new_client(base_url, key))

    def _new_client(self, base_url: str | None, key: str | None) -> Any:
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=key or "not-needed",
            base_url=base_url,
            timeout=self.timeout,
            max_retries=0,
            http_client=self.http_client,
        )

    async def aclose(self) -> None:
        """Close this model's connections now (they are also closed when the model is dropped)."""
        await self._clients.aclose()

    def _kwargs(self, request: ModelRequest) -> dict[str, Any]:
        params = {**self.params, **request.params}
        system, messages = split_messages(request.messages)
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": messages,
            "max_tokens": int(params.get("max_tokens", 1024)),
            "stream": True,
        }
        if system:
            kwargs["system"] = system
        sampling = {name: params[name] for name in SAMPLING_PARAMS if params.get(name) is not None}
        if sampling:
            kwargs["extra_body"] = sampling
        if "stop" in params:
            kwargs["stop_sequences"] = (
                params["stop"] if isinstance(params["stop"], list) else [params["stop"]]
            )
        tools = [
            {"name": to_wire_name(s.name), "description": s.description, "input_schema": s.parameters}
            for s in request.tools
        ]
        if request.response_format is not None:
            schema = {
                "type": "object",
                "properties": {"value": request.response_format},
                "required": ["value"],
            }
            tools.append({"name": STRUCTURED_TOOL, "description": "Give the answer.", "input_schema": schema})
            kwargs["tool_choice"] = {"type": "tool", "name": STRUCTURED_TOOL}
        if tools:
            kwargs["tools"] = tools
        return kwargs

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        import anthropic

        client = self._client()
        text: list[str] = []
        blocks: dict[int, dict[str, str]] = {}
        usage = Usage()
        finish_reason = "stop"
        stream: Any = None
        try:
            stream = await client.messages.create(**self._kwargs(request))
            async for event in stream:
                kind = event.type
                if kind == "message_start":
                    u = event.message.usage
                    usage = Usage(
                        input_tokens=u.input_tokens,
                        output_tokens=u.output_tokens,
                        cached_input_tokens=getattr(u, "cache_read_input_tokens", 0) or 0,
                    )
                elif kind == "content_block_start" and event.content_block.type == "tool_use":
                    blocks[event.index] = {
                        "id": event.content_block.id,
                        "name": event.content_block.name,
                        "json": "",
                    }
                elif kind == "content_block_delta":
                    if event.delta.type == "text_delta":
                        text.append(event.delta.text)
                        yield TextDelta(text=event.delta.text)
                    elif event.delta.type == "input_json_delta":
                        blocks[event.index]["json"] += event.delta.partial_json
                elif kind == "message_delta":
                    usage = usage.model_copy(update={"output_tokens": event.usage.output_tokens})
                    finish_reason = event.delta.stop_reason or finish_reason
        except anthropic.APIError as error:
            raise self._translate(error) from None
        finally:  # an answer left unread (cancelled, or the caller stopped) frees its connection
            if stream is not None:
                await stream.close()
        calls: list[ToolCall] = []
        for block in (blocks[i] for i in sorted(blocks)):
            arguments = parse_arguments(block["json"])
            if block["name"] == STRUCTURED_TOOL:
                structured = json.dumps(arguments.get("value", arguments))
                text.append(structured)
                yield TextDelta(text=structured)
                continue
            call = ToolCall(id=block["id"], name=from_wire_name(block["name"]), arguments=arguments)
            calls.append(call)
            yield ToolCallChunk(tool_call=call)
        yield ModelResponse(
            message=Message.assistant("".join(text), calls),
            usage=usage,
            finish_reason=finish_reason,
            provider=self.provider,
            model=self.model_name,
        )

    def _translate(self, error: Exception) -> ModelError:
        import anthropic

        where = f"{self.provider} ({self.base_url or 'api.anthropic.com'})"
        streamed = _stream_error(error)
        if streamed is not None:
            kind, message = streamed
            code, retryable = STREAM_ERRORS.get(kind, ("provider_error", False))
            return ModelError(
                f"{where} sent an error in the stream ({kind}): {message}",
                code=code,
                retryable=retryable,
                provider=self.provider,
            )
        return translate_sdk_error(
            anthropic, error, where=where, provider=self.provider, retryable_statuses=frozenset({408, 529})
        )


def _stream_error(error: Exception) -> tuple[str, str] | None:
    """(error type, message) of an ``event: error`` that arrived after a 200 response began."""
    response = getattr(error, "response", None)
    body = getattr(error, "body", None)
    if response is None or response.status_code != 200 or not isinstance(body, dict):
        return None
    detail = body.get("error")
    if not isinstance(detail, dict):
        return None
    return str(detail.get("type", "error")), str(detail.get("message", ""))
