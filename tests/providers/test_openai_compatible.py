"""The ``openai`` provider against a real OpenAI-compatible server: llama.cpp's own server
(``python -m llama_cpp.server``) serving the embedded model on 127.0.0.1, driven by the official
``openai`` SDK. Also: the same provider when its server is down."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentstage.providers.local import default_model_path
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service
from conftest import make_settings

pytestmark = [pytest.mark.anyio, pytest.mark.model]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("w")
    # llama.cpp's own server, loaded without weight repacking: its AMX path crashes on some CPUs.
    launcher = (
        "import runpy\n"
        "from agentstage.providers.llama_engine import extra_buffers\n"
        "with extra_buffers(False):\n"
        "    runpy.run_module('llama_cpp.server', run_name='__main__')\n"
    )
    command = [sys.executable, "-c", launcher, "--model", str(default_model_path()),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2"]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, "the llama.cpp server exited early"
            try:
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the llama.cpp server did not start")
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def openai_config(base_url: str, fallback: bool = False) -> dict[str, object]:
    chain: list[dict[str, object]] = [{"provider": "server", "model": "smollm2"}]
    if fallback:
        chain.append({"provider": "backup"})
    return {
        "providers": {
            "server": {"type": "openai", "base_url": base_url, "api_key": "env:AGENTSTAGE_TEST_SERVER_KEY"},
            "backup": {"type": "scripted", "script": {"responses": [{"text": "From the backup."}]}},
        },
        "profiles": {"remote": {"chain": chain, "params": {"temperature": 0, "max_tokens": 32}}},
        "default_profile": "remote",
        "retry": {"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.02},
    }


async def test_streams_an_answer_with_usage_from_a_real_server(
    openai_server: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSTAGE_TEST_SERVER_KEY", "local-test-key")
    async with build_service(make_settings(home, openai_config(openai_server))) as service:
        final = await service.run(RunRequest(input="Say hello.", mode="chat"))
        events = await service.events(final.id)
        snapshot = await service.snapshot(final.id)
    assert final.status == "completed", final.error_message
    deltas = [e.data["text"] for e in events if e.type == "message.delta"]
    assert len(deltas) > 1 and "".join(deltas) == final.output
    response = next(e for e in events if e.type == "model.response")
    assert response.data["provider"] == "server" and response.data["usage"]["output_tokens"] > 0
    request = next(e for e in events if e.type == "model.request")
    assert "local-test-key" not in str(request.data) and "local-test-key" not in str(snapshot)


async def test_react_with_json_actions_over_the_server(
    openai_server: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSTAGE_TEST_SERVER_KEY", "local-test-key")
    async with build_service(make_settings(home, openai_config(openai_server))) as service:
        final = await service.run(
            RunRequest.parse(
                {"input": "Use the calculator for 6*7.", "mode": "react", "options": {"max_steps": 2}}
            )
        )
        events = await service.events(final.id)
    assert any(e.type == "model.response" for e in events)
    assert final.status in {"completed", "failed"}
    # 32 tokens may cut a small model's answer short: that is named, never taken for an answer.
    assert final.error_code in {None, "max_steps", "incomplete_answer"}, final.error_message


async def test_a_server_that_is_down_is_retried_then_falls_back(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSTAGE_TEST_SERVER_KEY", "local-test-key")
    closed = f"http://127.0.0.1:{free_port()}/v1"
    async with build_service(make_settings(home, openai_config(closed, fallback=True))) as service:
        final = await service.run(RunRequest(input="hi", mode="chat"))
        events = await service.events(final.id)
    retry = next(e for e in events if e.type == "model.retry")
    assert retry.data["provider"] == "server" and retry.data["error"]["code"] == "provider_unavailable"
    fallback = next(e for e in events if e.type == "model.fallback")
    assert (fallback.data["from_provider"], fallback.data["to_provider"]) == ("server", "backup")
    assert final.status == "completed" and final.output == "From the backup."


async def test_a_server_that_is_down_without_fallback_is_named(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSTAGE_TEST_SERVER_KEY", "local-test-key")
    closed = f"http://127.0.0.1:{free_port()}/v1"
    async with build_service(make_settings(home, openai_config(closed))) as service:
        final = await service.run(RunRequest(input="hi", mode="chat"))
    assert final.status == "failed" and final.error_code == "provider_unavailable"
    assert final.error_message is not None and "server" in final.error_message
