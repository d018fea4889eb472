"""The ``anthropic`` provider through the official SDK, against recorded HTTP exchanges.

The SDK is given an HTTP client whose transport replays the recordings in ``recordings/``; the
SDK builds the requests, parses the Server-Sent Events and raises its own errors, and the provider
turns all of that into our chunks and errors. Nothing of ours is replaced.
"""

from __future__ import annotations

from typing import Any

import pytest
from recorded_http import Replay

from agentstage.core.messages import Message, ToolCall
from agentstage.core.model import ModelRequest, ModelResponse, RetryNotice, TextDelta, ToolCallChunk, ToolSpec
from agentstage.errors import ModelError
from agentstage.providers.anthropic import AnthropicModel
from agentstage.providers.resilience import ResilientModel, RetryPolicy

pytestmark = pytest.mark.anyio

CALCULATOR = ToolSpec(
    name="math.calculate",
    description="Evaluate arithmetic.",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
)


@pytest.fixture(autouse=True)
def test_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", "test-key")


def model(replay: Replay) -> AnthropicModel:
    return AnthropicModel(
        "claude-haiku-4-5",
        api_key="env:ANTHROPIC_TEST_KEY",
        params={"temperature": 0.2, "max_tokens": 300},
        http_client=replay.client(),
    )


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def colours() -> ModelRequest:
    return ModelRequest(
        messages=[Message.system("You are terse."), Message.user("Name three primary colours.")]
    )


async def test_streams_text_with_usage_and_sends_sampling_in_the_body() -> None:
    replay = Replay("anthropic_text")
    chunks = await collect(model(replay).stream(colours()))
    assert replay.mismatches == []
    assert [c.text for c in chunks if isinstance(c, TextDelta)] == ["Red, ", "yellow and ", "blue."]
    final = chunks[-1]
    assert isinstance(final, ModelResponse)
    assert final.message.content == "Red, yellow and blue." and final.finish_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cached_input_tokens) == (
        24,
        9,
        8,
    )
    assert replay.sent[0]["temperature"] == 0.2 and replay.sent[0]["system"] == "You are terse."


async def test_tool_calls_and_their_results_round_trip() -> None:
    replay = Replay("anthropic_tool_call", "anthropic_tool_result")
    provider = model(replay)
    question = [Message.system("You are terse."), Message.user("What is 6*7?")]
    chunks = await collect(provider.stream(ModelRequest(messages=question, tools=[CALCULATOR])))
    calls = [c.tool_call for c in chunks if isinstance(c, ToolCallChunk)]
    assert calls == [
        ToolCall(id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="math.calculate", arguments={"expression": "6*7"})
    ]
    final = chunks[-1]
    assert isinstance(final, ModelResponse) and final.finish_reason == "tool_use"
    assert final.message.content == "Let me calculate that." and final.message.tool_calls == calls
    assert (final.usage.input_tokens, final.usage.output_tokens) == (391, 61)
    history = [
        *question,
        final.message,
        Message.tool('{"result": 42}', tool_call_id=calls[0].id, name="math.calculate"),
    ]
    answer = await collect(provider.stream(ModelRequest(messages=history, tools=[CALCULATOR])))
    assert replay.mismatches == []
    assert isinstance(answer[-1], ModelResponse) and answer[-1].message.content == "6*7 is 42."


@pytest.mark.parametrize(
    ("recording", "code", "retryable", "retry_after", "says"),
    [
        ("anthropic_rate_limited", "rate_limited", True, 2.0, "rate limited"),
        ("anthropic_bad_key", "auth_failed", False, None, "invalid x-api-key"),
        ("anthropic_overloaded", "provider_error", True, None, "Overloaded"),
        ("anthropic_bad_request", "provider_error", False, None, "text content blocks must be non-empty"),
        ("anthropic_stream_error", "provider_overloaded", True, None, "overloaded_error"),
    ],
)
async def test_api_errors_map_to_model_errors(
    recording: str, code: str, retryable: bool, retry_after: float | None, says: str
) -> None:
    replay = Replay(recording)
    with pytest.raises(ModelError) as raised:
        await collect(model(replay).stream(colours()))
    assert replay.mismatches == []
    error = raised.value
    assert (error.code, error.retryable, error.retry_after, error.provider) == (
        code,
        retryable,
        retry_after,
        "anthropic",
    )
    assert says in error.message and "test-key" not in error.message


async def test_an_overloaded_api_is_retried_by_the_chain() -> None:
    replay = Replay("anthropic_overloaded", "anthropic_text")
    chain = ResilientModel([model(replay)], RetryPolicy(base_delay=0.01, max_delay=0.02))
    chunks = await collect(chain.stream(colours()))
    assert replay.mismatches == []
    retries = [c for c in chunks if isinstance(c, RetryNotice)]
    assert len(retries) == 1 and retries[0].code == "provider_error"
    final = chunks[-1]
    assert isinstance(final, ModelResponse) and final.message.content == "Red, yellow and blue."
