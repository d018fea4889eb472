"""Smoke tests of the real embedded model (SmolLM2-135M through llama.cpp): no key, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentstage.core.orchestrators.actions import parse_action
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service
from conftest import make_settings

pytestmark = [pytest.mark.anyio, pytest.mark.model]


async def test_chat_mode_answers_with_the_embedded_model(home: Path) -> None:
    async with build_service(make_settings(home, {"default_profile": "fast"})) as service:
        final = await service.run(RunRequest(input="What is the capital of France?", mode="chat"))
        events = await service.events(final.id)
    assert final.status == "completed", final.error_message
    assert final.output and final.output.strip()
    deltas = [e for e in events if e.type == "message.delta"]
    assert len(deltas) > 1, "the answer streams in several chunks"
    assert "".join(d.data["text"] for d in deltas) == final.output
    response = next(e for e in events if e.type == "model.response")
    assert response.data["provider"] == "local" and response.data["usage"]["input_tokens"] > 0


async def test_react_mode_gets_a_valid_json_action(home: Path) -> None:
    async with build_service(make_settings(home, {"default_profile": "fast"})) as service:
        request = RunRequest.parse(
            {"input": "Use the calculator: what is 17 * 23?", "mode": "react", "options": {"max_steps": 2}}
        )
        final = await service.run(request)
        events = await service.events(final.id)
    model_request = next(e for e in events if e.type == "model.request")
    assert model_request.data["response_format"] is not None
    response = next(e for e in events if e.type == "model.response")
    action = json.loads(response.data["message"]["content"])
    assert "answer" in action or action["tool"] in {"math.calculate", "sql.query"}
    service_tools = build_service(make_settings(home, {})).catalog.toolset()
    parse_action(response.data["message"]["content"], service_tools)  # raises if invalid
    first_step = next(e for e in events if e.type == "step.finished")
    assert first_step.data["status"] == "ok"
    assert final.status in {"completed", "failed"}
    if final.status == "failed":
        assert final.error_code == "max_steps"


def test_agent_run_works_offline_with_the_defaults(home: Path) -> None:
    from conftest import Cli

    cli = Cli(home)
    done = cli("run", "What is the capital of France?", "--mode", "chat", "--output", "json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["status"] == "completed" and body["output"] and body["profile"] == "local"


async def test_a_model_that_cannot_load_says_why_and_how_to_fix_it(home: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    for path, hint in [(tmp_path / "missing.gguf", "does not exist"), (broken, "broken.gguf")]:
        config = {"providers": {"local": {"type": "local", "model_path": str(path)}}}
        async with build_service(make_settings(home, config)) as service:
            final = await service.run(RunRequest(input="hi", mode="chat"))
        assert final.status == "failed" and final.error_code == "model_unavailable"
        assert final.error_message is not None and hint in final.error_message
        assert "model_path" in final.error_message
