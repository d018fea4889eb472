"""A run of the real embedded model (SmolLM2 through llama.cpp) replays to the same output, token
chunk for token chunk, without loading the model again."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service
from agentstage.types import RunStatus
from conftest import make_settings

from .conftest import tool_calls, types

pytestmark = [pytest.mark.anyio, pytest.mark.model]


async def test_embedded_model_runs_replay_exactly(home: Path) -> None:
    async with build_service(make_settings(home, {"default_profile": "fast"})) as service:
        chat = await service.run(RunRequest(input="What is the capital of France?", mode="chat"))
        react = await service.run(
            RunRequest.parse(
                {
                    "input": "Use the calculator: what is 17 * 23?",
                    "mode": "react",
                    "options": {"max_steps": 2},
                }
            )
        )
        for original in (chat, react):
            replayed = await service.wait((await service.replay(original.id)).id)
            a, b = await service.events(original.id), await service.events(replayed.id)
            assert replayed.status == original.status, replayed.error_message
            assert replayed.output == original.output and replayed.error_code == original.error_code
            assert types(b) == types(a) and tool_calls(b) == tool_calls(a)
            assert [e.data["text"] for e in b if e.type == "message.delta"] == [
                e.data["text"] for e in a if e.type == "message.delta"
            ]
            assert {e.data["provider"] for e in a if e.type == "model.response"} == {"local"}
            assert {e.data["provider"] for e in b if e.type == "model.response"} == {"replay"}
    assert chat.status == RunStatus.COMPLETED and chat.output
