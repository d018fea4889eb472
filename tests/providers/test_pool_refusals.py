"""An on-prem pool node whose front refuses this client (a TLS proxy answering 400 without a
client certificate, as nginx does) is unavailable, not a failed call: the call moves to the next
node and the node is skipped. The model server's own JSON error is the request's fault and is not
failed over. The nodes are real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstage.core.messages import Message
from agentstage.core.model import ModelRequest, ModelResponse
from agentstage.errors import ModelError
from agentstage.providers.openai import OpenAIModel
from agentstage.providers.pool import EndpointPool, HealthCheck, PoolOptions
from threaded_server import ThreadedServer

pytestmark = pytest.mark.anyio

RECORDING = json.loads((Path(__file__).parent / "recordings" / "openai_tool_calls.json").read_text("utf-8"))[
    "response"
]
STREAM = ("\n".join(RECORDING["body"]) + "\n").encode("utf-8")
NGINX_REFUSAL = (
    b"<html>\r\n<head><title>400 No required SSL certificate was sent</title></head>\r\n<body>\r\n"
    b"<center><h1>400 Bad Request</h1></center>\r\n<center>No required SSL certificate was sent</center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
TOO_LONG = json.dumps(
    {"error": {"message": "maximum context length exceeded", "type": "invalid_request_error", "code": None}}
).encode("utf-8")
ANSWERS = {
    "ok": (200, "text/event-stream; charset=utf-8", STREAM),
    "mtls": (400, "text/html", NGINX_REFUSAL),
    "bad-request": (400, "application/json", TOO_LONG),
}


class Node:
    """A real HTTP/1.1 server answering every request the same way (by ``kind``), counting them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls = 0
        self.server = ThreadedServer(self._connection)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/v1"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {
                    k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)
                }
                await reader.readexactly(int(headers.get("content-length", "0")))
                status, kind, body = ANSWERS[self.kind]
                if method == "GET" and self.kind == "ok":  # the pool's health check
                    status, kind, body = 200, "application/json", b'{"object": "list", "data": []}'
                elif method == "POST" and path.endswith("/chat/completions"):
                    self.calls += 1
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {len(body)}\r\n"
                    "connection: keep-alive\r\n\r\n".encode("latin-1")
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def nodes() -> Iterator[dict[str, Node]]:
    running = {name: Node(kind) for name, kind in
               (("ok", "ok"), ("mtls", "mtls"), ("mtls2", "mtls"), ("bad", "bad-request"))}  # fmt: skip
    yield running
    for node in running.values():
        node.stop()


def pooled(*nodes: Node) -> tuple[OpenAIModel, EndpointPool]:
    options = PoolOptions(nodes=[n.url for n in nodes], health_check=HealthCheck(interval=60, cooldown=30))
    pool = EndpointPool(options)
    return OpenAIModel("smollm2", provider="inhouse", api_key="k", pool=pool), pool


async def call(model: OpenAIModel) -> ModelResponse:
    chunks: list[Any] = [chunk async for chunk in model.stream(ModelRequest(messages=[Message.user("hi")]))]
    assert isinstance(chunks[-1], ModelResponse)
    return chunks[-1]


async def test_a_node_whose_proxy_refuses_this_client_is_skipped(nodes: dict[str, Node]) -> None:
    model, pool = pooled(nodes["mtls"], nodes["ok"])
    try:
        answers = [await call(model) for _ in range(4)]  # the first call tries the refusing node first
        assert all(answer.message.tool_calls for answer in answers)
        assert nodes["ok"].calls == 4
        assert nodes["mtls"].calls == 1  # tried once, then skipped while it is down
        refusing = pool.nodes[0]
        assert refusing.failures == 1 and not refusing.up
    finally:
        pool.close()
        await model.aclose()


async def test_when_every_node_refuses_the_call_fails_unavailable_naming_the_last(
    nodes: dict[str, Node],
) -> None:
    model, pool = pooled(nodes["mtls"], nodes["mtls2"])
    try:
        with pytest.raises(ModelError) as failed:
            await call(model)
        error = failed.value
        assert error.code == "provider_unavailable" and error.retryable
        assert nodes["mtls2"].url in error.message
        assert "HTTP 400" in error.message and "No required SSL certificate was sent" in error.message
        assert nodes["mtls"].calls == nodes["mtls2"].calls == 1
    finally:
        pool.close()
        await model.aclose()


async def test_the_model_servers_own_refusal_fails_the_call_and_keeps_the_node(
    nodes: dict[str, Node],
) -> None:
    model, pool = pooled(nodes["bad"], nodes["ok"])
    try:
        with pytest.raises(ModelError) as failed:
            await call(model)
        assert failed.value.code == "provider_error"
        assert "HTTP 400" in failed.value.message and "maximum context length" in failed.value.message
        assert nodes["ok"].calls == 0  # not failed over: every node would refuse this request
        assert pool.nodes[0].failures == 0 and pool.nodes[0].up
    finally:
        pool.close()
        await model.aclose()
