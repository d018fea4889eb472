"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio).

Uses the official ``openai`` SDK (imported lazily) with ``base_url``. SDK-level retries are off:
retries, backoff and fallback belong to :mod:`agentstage.providers.resilience` so that each
attempt is recorded as an event.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from agentstage.core.messages import Message, ToolCall, Usage
from agentstage.core.model import ModelChunk, ModelRequest, ModelResponse, TextDelta, ToolCallChunk
from agentstage.core.tools import from_wire_name, to_wire_name
from agentstage.errors import ModelError
from agentstage.providers.pool import EndpointPool, refused_in_front
from agentstage.providers.sdk_clients import ClientCache
from agentstage.providers.wire import parse_arguments, resolve_secret, translate_sdk_error


def _message_to_openai(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "content": message.content, "tool_call_id": message.tool_call_id}
    item: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        item["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": to_wire_name(call.name), "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    return item


class OpenAIModel:
    native_tools = True

    def __init__(
        self,
        model_name: str,
        *,
        provider: str = "openai",
        base_url: str | None = None,
        api_key: str | None = "env:OPENAI_API_KEY",
        params: dict[str, Any] | None = None,
        timeout: float = 60.0,
        pool: EndpointPool | None = None,
        http_client: Any = None,
    ):
        """``pool``: several servers behind this provider (providers/pool.py); each call goes to
        the node the pool picks, failing over to the next one while nothing was streamed."""
        self.pool = pool
        self.provider = provider
        self.model_name = model_name
        self.base_url = base_url
        self.api_key_ref = api_key
        self.params = params or {}
        self.timeout = timeout
        self.http_client = http_client  # an ``httpx2.AsyncClient`` the caller owns (and closes)
        self._clients = ClientCache(self, owned=http_client is None)

    def _client(self, base_url: str | None = None) -> Any:
        """This model's SDK client for ``base_url`` (a pool's node, else the configured one)."""
        base_url = base_url or resolve_secret(self.base_url, provider=self.provider)
        key = resolve_secret(self.api_key_ref, provider=self.provider)
        return self._clients.get((base_url or "", key or ""), lambda: self._new_client(base_url, key))

    def _new_client(self, base_url: str | None, key: str | None) -> Any:
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        http_client = self.http_client
        if http_client is None and self.pool is not None and self.pool.ssl_context is not None:
            http_client = DefaultAsyncHttpxClient(verify=self.pool.ssl_context, timeout=self.timeout)
        return AsyncOpenAI(
            api_key=key or "not-needed",
            base_url=base_url,
            timeout=self.timeout,
            max_retries=0,
            http_client=http_client,
        )

    async def aclose(self) -> None:
        """Close this model's connections now (they are also closed when the model is dropped)."""
        await self._clients.aclose()

    def _kwargs(self, request: ModelRequest) -> dict[str, Any]:
        params = {**self.params, **request.params}
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": [_message_to_openai(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for name in ("temperature", "top_p", "max_tokens", "seed", "stop"):
            if name in params:
                kwargs[name] = params[name]
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": to_wire_name(spec.name),
                        "description": spec.description,
                        "parameters": spec.parameters,
                    },
                }
                for spec in request.tools
            ]
        if request.response_format is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.response_format, "strict": False},
            }
        return kwargs

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        if self.pool is None:
            async for chunk in self._stream(request, None):
                yield chunk
            return
        nodes = self.pool.order()
        for index, node in enumerate(nodes):
            started = False
            node.in_flight += 1
            node.calls += 1
            try:
                async for chunk in self._stream(request, node.url):
                    started = True
                    yield chunk
                return
            except ModelError as error:
                unreachable = error.code in {"provider_unavailable", "model_timeout"}
                if started or not unreachable or index == len(nodes) - 1:
                    raise
                self.pool.failed(node, error)
            finally:
                node.in_flight -= 1

    async def _stream(self, request: ModelRequest, base_url: str | None) -> AsyncIterator[ModelChunk]:
        import openai

        client = self._client(base_url)
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage = Usage()
        finish_reason = "stop"
        stream: Any = None
        try:
            stream = await client.chat.completions.create(**self._kwargs(request))
            async for chunk in stream:
                if chunk.usage is not None:
                    cached = getattr(chunk.usage, "prompt_tokens_details", None)
                    usage = Usage(
                        input_tokens=chunk.usage.prompt_tokens,
                        output_tokens=chunk.usage.completion_tokens,
                        cached_input_tokens=getattr(cached, "cached_tokens", 0) or 0,
                    )
                for choice in chunk.choices:
                    if choice.delta.content:
                        text.append(choice.delta.content)
                        yield TextDelta(text=choice.delta.content)
                    for delta in choice.delta.tool_calls or []:
                        slot = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                        slot["id"] = delta.id or slot["id"]
                        if delta.function is not None:
                            slot["name"] += delta.function.name or ""
                            slot["arguments"] += delta.function.arguments or ""
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        except openai.APIError as error:
            if self.pool is not None and isinstance(error, openai.APIStatusError):
                unavailable = _refused_in_front(error)
                if unavailable is not None:
                    raise ModelError(
                        f"{self.provider} ({base_url}) cannot take calls from this client: {unavailable}",
                        code="provider_unavailable",
                        retryable=True,
                        provider=self.provider,
                    ) from None
            raise self._translate(error, base_url) from None
        finally:  # an answer left unread (cancelled, or the caller stopped) frees its connection
            if stream is not None:
                await stream.close()
        tool_calls = [
            ToolCall(
                id=slot["id"] or f"call_{index}",
                name=from_wire_name(slot["name"]),
                arguments=parse_arguments(slot["arguments"]),
            )
            for index, slot in sorted(calls.items())
        ]
        for call in tool_calls:
            yield ToolCallChunk(tool_call=call)
        if usage.total_tokens == 0:
            usage = _estimated_usage(request, text, calls)
        yield ModelResponse(
            message=Message.assistant("".join(text), tool_calls),
            usage=usage,
            finish_reason=finish_reason,
            provider=self.provider,
            model=self.model_name,
        )

    def _translate(self, error: Exception, base_url: str | None = None) -> ModelError:
        import openai

        where = f"{self.provider} ({base_url or self.base_url or 'api.openai.com'})"
        return translate_sdk_error(openai, error, where=where, provider=self.provider)


def _refused_in_front(error: Any) -> str | None:
    """What a pool node's front answered, if the node (not the request) is at fault; else None."""
    response = error.response
    try:
        body = bytes(response.content)  # the SDK reads an error's body before raising it
    except Exception:  # not read after all: judge by status and content type alone
        body = b""
    if not refused_in_front(response.status_code, response.headers.get("content-type"), body):
        return None
    text = " ".join(body.decode("utf-8", "replace").split())
    page = re.sub(r"<[^>]+>", " ", text)
    return f"HTTP {response.status_code} {' '.join(page.split())[:200]}".rstrip()


def _estimated_usage(request: ModelRequest, text: list[str], calls: dict[int, dict[str, str]]) -> Usage:
    """Some compatible servers (llama.cpp's, older vLLM) send no usage when streaming. Rather than
    record a free call, estimate: one token per streamed chunk, about four characters per token in."""
    prompt_chars = sum(len(m.content) for m in request.messages)
    call_chars = sum(len(c["name"]) + len(c["arguments"]) for c in calls.values())
    return Usage(input_tokens=max(1, prompt_chars // 4), output_tokens=len(text) + call_chars // 4)
