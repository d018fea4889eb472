"""The openai and anthropic providers keep their SDK client between calls: successive calls reuse
one connection, a new event loop gets a new client, and every connection is closed when its loop
ends or the model is closed (pytest turns a ResourceWarning for a leaked socket into an error).

The server is a real HTTP/1.1 keep-alive server on 127.0.0.1 answering with recorded streams, so
the SDK's own connection pool is what is being watched."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from recorded_http import RECORDINGS

from agentstage.core.messages import Message
from agentstage.core.model import ModelRequest, ModelResponse
from agentstage.providers.anthropic import AnthropicModel
from agentstage.providers.openai import OpenAIModel
from threaded_server import ThreadedServer


def recorded_body(name: str) -> tuple[str, bytes]:
    recorded = json.loads((RECORDINGS / f"{name}.json").read_text(encoding="utf-8"))["response"]
    return recorded["headers"]["content-type"], ("\n".join(recorded["body"]) + "\n").encode("utf-8")


class KeepAliveServer:
    """Answers every POST with a recorded stream (by path) and counts connections opened and closed."""

    def __init__(self) -> None:
        self.answers = {
            "/v1/chat/completions": recorded_body("openai_tool_calls"),
            "/v1/messages": recorded_body("anthropic_text"),
        }
        self.opened = 0
        self.closed = 0
        self.requests = 0
        self.server = ThreadedServer(self._connection)
        self.port = self.server.port

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
                await reader.readexactly(length)
                self.requests += 1
                kind, body = self.answers[path]
                writer.write(
                    f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {len(body)}\r\n"
                    "connection: keep-alive\r\n\r\n".encode("latin-1")
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()

    def wait_closed(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while self.closed < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.closed == count, f"{self.closed} of {self.opened} connections closed"

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[KeepAliveServer]:
    running = KeepAliveServer()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_TEST_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_TEST_KEY", "test-key")


def openai_model(server: KeepAliveServer) -> OpenAIModel:
    return OpenAIModel(
        "gpt-4o-mini", api_key="env:OPENAI_TEST_KEY", base_url=f"http://127.0.0.1:{server.port}/v1"
    )


def anthropic_model(server: KeepAliveServer) -> AnthropicModel:
    return AnthropicModel(
        "claude-haiku-4-5", api_key="env:ANTHROPIC_TEST_KEY", base_url=f"http://127.0.0.1:{server.port}"
    )


REQUEST = ModelRequest(messages=[Message.user("What is 6*7, and 2**10?")])
Build = Callable[[KeepAliveServer], OpenAIModel | AnthropicModel]
BUILDS = [pytest.param(openai_model, id="openai"), pytest.param(anthropic_model, id="anthropic")]


async def answer(model: OpenAIModel | AnthropicModel) -> ModelResponse:
    chunks: list[Any] = [chunk async for chunk in model.stream(REQUEST)]
    final = chunks[-1]
    assert isinstance(final, ModelResponse)
    return final


def in_new_loop(work: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        return await work()

    return asyncio.run(main())


@pytest.mark.parametrize("build", BUILDS)
def test_calls_share_one_connection_until_the_model_is_closed(server: KeepAliveServer, build: Build) -> None:
    opened, closed, requests = server.opened, server.closed, server.requests
    model = build(server)

    async def three_calls_then_close() -> list[ModelResponse]:
        answers = [await answer(model) for _ in range(3)]
        await model.aclose()
        return answers

    answers = in_new_loop(three_calls_then_close)
    assert all(a.usage.input_tokens > 0 for a in answers)
    assert server.requests - requests == 3
    assert server.opened - opened == 1  # one connection carried all three calls
    server.wait_closed(closed + 1)


@pytest.mark.parametrize("build", BUILDS)
def test_each_event_loop_gets_its_own_client_closed_when_the_loop_ends(
    server: KeepAliveServer, build: Build
) -> None:
    opened, closed = server.opened, server.closed
    models = [build(server)]  # used by two CLI-like commands, each with its own loop, never closed by hand

    async def two_calls() -> None:
        await answer(models[0])
        await answer(models[0])

    in_new_loop(two_calls)
    server.wait_closed(closed + 1)  # the first loop's connection ended with its loop
    in_new_loop(two_calls)
    server.wait_closed(closed + 2)
    assert server.opened - opened == 2
    models.clear()
    gc.collect()  # a socket left open would surface here as a ResourceWarning (an error under pytest)


@pytest.mark.parametrize("build", BUILDS)
def test_a_model_dropped_while_its_loop_runs_closes_its_connection(
    server: KeepAliveServer, build: Build
) -> None:
    closed = server.closed

    async def call_then_drop() -> None:
        model = build(server)
        await answer(model)
        del model
        gc.collect()
        for _ in range(100):  # the close runs as a task of this loop
            if server.closed > closed:
                return
            await asyncio.sleep(0.02)

    in_new_loop(call_then_drop)
    server.wait_closed(closed + 1)
