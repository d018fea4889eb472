"""Smoke tests of the real embedded model (SmolLM2-135M through llama.cpp): no key, no network."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agentstage.core.orchestrators.actions import parse_action
from agentstage.errors import ConfigError, ModelError
from agentstage.providers.llama_engine import Job, generate, load_llama, unload
from agentstage.providers.local import LocalModel, cpu_has_amx, use_extra_buffers
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


async def test_a_model_that_cannot_load_is_refused_before_the_run_starts(home: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    for path, hint in [(tmp_path / "missing.gguf", "does not exist"), (broken, "not a GGUF model file")]:
        config = {"providers": {"local": {"type": "local", "model_path": str(path)}}}
        async with build_service(make_settings(home, config)) as service:
            with pytest.raises(ConfigError) as refused:
                await service.run(RunRequest(input="hi", mode="chat"))
            assert await service.list_runs() == [], "nothing is written for a run that cannot start"
        assert refused.value.code == "model_unavailable"
        assert hint in refused.value.message and str(path) in refused.value.message
        assert "providers.local.model_path" in refused.value.message


@pytest.mark.parametrize("repack", ["off", "on", "auto"])
def test_the_repack_option_reaches_llama_cpp_model_params(repack: str) -> None:
    """``use_extra_bufts`` is what llama.cpp was given (loading only: "on" may crash when computing
    on CPUs with AMX, which is the point of the option)."""
    model = LocalModel(repack=repack)  # type: ignore[arg-type]
    expected = {"off": False, "on": True, "auto": not cpu_has_amx()}[repack]
    assert model.spec().use_extra_bufts is expected
    loaded = load_llama(model.spec())
    try:
        assert loaded.llama.model_params.use_extra_bufts is expected
    finally:
        unload(model.spec())


def test_auto_never_repacks_on_a_cpu_with_amx() -> None:
    assert use_extra_buffers("auto") is (not cpu_has_amx())
    assert use_extra_buffers("off") is False and use_extra_buffers("on") is True


def test_a_grammar_llama_cpp_cannot_parse_is_an_error_not_a_crash() -> None:
    spec = LocalModel().spec()
    job = Job(messages=[{"role": "user", "content": "hi"}], max_tokens=4, grammar="root ::= undefined-rule")
    with pytest.raises(ModelError) as failed:
        list(generate(spec, job, threading.Event()))
    assert failed.value.code == "invalid_grammar"


async def test_an_input_longer_than_the_window_fails_at_once_with_context_overflow(home: Path) -> None:
    text = "Please summarize these notes. " + "The quarterly numbers went up and then down again. " * 600
    assert len(text) > 30_000  # about 6,000 tokens: well over the window of 4,096
    async with build_service(make_settings(home, {})) as service:
        final = await service.run(RunRequest(input=text, mode="chat"))
        events = await service.events(final.id)
    assert final.status == "failed" and final.error_code == "context_overflow"
    assert final.error_message is not None and "4096 tokens" in final.error_message
    assert f"{len(text)} characters" in final.error_message
    assert not [e for e in events if e.type == "model.request"]
