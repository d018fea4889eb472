"""Native tool calls over the ``openai`` provider, through the official SDK, against a recorded
HTTP exchange (the SDK's own client with a transport that replays ``recordings/``)."""

from __future__ import annotations

from typing import Any

import pytest
from recorded_http import Replay

from agentstage.core.messages import Message, ToolCall
from agentstage.core.model import (
    FallbackNotice,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ToolCallChunk,
    ToolSpec,
)
from agentstage.providers.openai import OpenAIModel
from agentstage.providers.resilience import ResilientModel, RetryPolicy, UnavailableModel

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


async def test_native_tool_calls_stream_in_pieces_with_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_TEST_KEY", "test-key")
    replay = Replay("openai_tool_calls")
    provider = OpenAIModel(
        "gpt-4o-mini",
        api_key="env:OPENAI_TEST_KEY",
        params={"temperature": 0.2, "max_tokens": 300},
        http_client=replay.client(),
    )
    # A keyless provider ahead of it is skipped; the caller's system instructions join the prompt.
    chain = ResilientModel(
        [UnavailableModel("anthropic", "claude", "ANTHROPIC_API_KEY is not set"), provider],
        RetryPolicy(max_attempts=1),
    )
    request = ModelRequest(
        messages=[Message.system("You are terse."), Message.user("What is 6*7, and 2**10?")],
        tools=[CALCULATOR],
        params={"system": "Answer with numbers only."},
    )
    chunks: list[Any] = [chunk async for chunk in chain.stream(request)]
    assert replay.mismatches == []
    assert "system" not in replay.sent[0]  # instructions, not a parameter
    notices = [c for c in chunks if isinstance(c, FallbackNotice)]
    assert [(n.from_provider, n.to_provider, n.code) for n in notices] == [
        ("anthropic", "openai", "missing_secret")
    ]
    assert not [c for c in chunks if isinstance(c, TextDelta)]
    calls = [c.tool_call for c in chunks if isinstance(c, ToolCallChunk)]
    assert calls == [
        ToolCall(id="call_Wx1RbK3", name="math.calculate", arguments={"expression": "6*7"}),
        ToolCall(id="call_Qp8LmZ2", name="math.calculate", arguments={"expression": "2**10"}),
    ]
    final = chunks[-1]
    assert isinstance(final, ModelResponse) and final.finish_reason == "tool_calls"
    assert final.message.tool_calls == calls
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cached_input_tokens) == (
        96,
        41,
        64,
    )
