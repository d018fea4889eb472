"""The WebSocket doors with a real client (``websockets``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .conftest import Server

pytestmark = pytest.mark.anyio


def ws_url(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def frames_until(socket: ClientConnection, done: str) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = json.loads(await socket.recv())
        frames.append(frame)
        if frame.get("type") == done:
            return frames


async def test_stream_a_run_over_a_socket(server: Server) -> None:
    async with connect(ws_url(server, "/ws/agent/stream"), additional_headers=server.headers) as socket:
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv()) == {"type": "pong"}
        await socket.send(json.dumps({"type": "run", "input": "hi", "mode": "chat"}))
        frames = await frames_until(socket, "run.completed")
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[0]["type"] == "run.queued"


async def test_cancel_and_resume_frames(server: Server) -> None:
    async with connect(ws_url(server, "/ws/agent/stream"), additional_headers=server.headers) as socket:
        await socket.send(json.dumps({"type": "run", "input": "slow", "mode": "chat"}))
        seen = []
        while True:
            frame = json.loads(await socket.recv())
            seen.append(frame)
            if frame.get("type") == "message.delta":
                await socket.send(json.dumps({"type": "cancel"}))
                break
        rest = await frames_until(socket, "run.cancelled")
        run_id = seen[0]["run_id"]
        await socket.send(json.dumps({"type": "resume", "run_id": run_id, "after": 2}))
        replay = await frames_until(socket, "run.cancelled")
    everything = [f for f in seen + rest if "seq" in f]
    assert [f["seq"] for f in replay] == [f["seq"] for f in everything[2:]]
    assert any(f.get("type") == "cancel_accepted" for f in rest)


async def test_a_frame_that_is_not_json_closes_with_1003(server: Server) -> None:
    async with connect(ws_url(server, "/ws/agent/stream"), additional_headers=server.headers) as socket:
        await socket.send("this is not json")
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    assert "JSON" in closed.value.rcvd.reason


@pytest.mark.parametrize(
    ("frame", "says"),
    [('{"type": "run", "input": "\\ud800"}', "unpaired surrogate"), ('{"type": "ping", "n": NaN}', "NaN")],
)
async def test_a_frame_python_reads_but_json_does_not_allow_closes_with_1003(
    server: Server, frame: str, says: str
) -> None:
    async with connect(ws_url(server, "/ws/agent/stream"), additional_headers=server.headers) as socket:
        await socket.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    assert says in closed.value.rcvd.reason, closed.value.rcvd.reason


async def test_bad_frames_get_errors_and_the_socket_stays_open(server: Server) -> None:
    async with connect(ws_url(server, "/ws/agent/stream"), additional_headers=server.headers) as socket:
        for frame, code in [
            ({"type": "dance"}, "invalid_frame"),
            ({"type": "run", "input": 5}, "invalid_request"),
            ({"type": "run", "input": "hi", "profile": "nope"}, "unknown_profile"),
            ({"type": "resume", "run_id": "nope", "after": 0}, "run_not_found"),
            ({"type": "resume", "run_id": "x", "after": -1}, "invalid_frame"),
        ]:
            await socket.send(json.dumps(frame))
            answer = json.loads(await socket.recv())
            assert answer["type"] == "error" and answer["code"] == code, (frame, answer)
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv()) == {"type": "pong"}


async def test_sockets_need_a_key(server: Server) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        async with connect(ws_url(server, "/ws/agent/stream")) as socket:
            await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008  # policy violation
    async with connect(ws_url(server, f"/ws/agent/stream?api_key={server.key}")) as socket:
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv()) == {"type": "pong"}


async def test_chat_socket_keeps_one_conversation(server: Server) -> None:
    async with connect(ws_url(server, "/ws/agent/chat"), additional_headers=server.headers) as socket:
        await socket.send(json.dumps({"type": "message", "input": "My name is Ada.", "mode": "chat"}))
        first = await frames_until(socket, "run.completed")
        await socket.send(json.dumps({"type": "message", "input": "What is my name?", "mode": "chat"}))
        second = await frames_until(socket, "run.completed")
    assert first[0]["type"] == "conversation"
    assert second[-1]["data"]["output"] == "Your name is Ada."
    request = next(f for f in second if f["type"] == "model.request")
    assert "Hello Ada." in [m["content"] for m in request["data"]["messages"]]


async def test_heartbeat_closes_a_silent_peer(tmp_path: Path) -> None:
    server = Server(tmp_path, {"http": {"ws_heartbeat": 0.2}}).start()
    try:
        async with connect(ws_url(server, "/ws/agent/stream"), additional_headers=server.headers) as socket:
            pings = 0
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    if json.loads(await socket.recv())["type"] == "ping":
                        pings += 1
        assert pings == 2 and closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    finally:
        server.stop()


async def test_a_slow_reader_is_told_it_fell_behind_and_never_slows_the_run(tmp_path: Path) -> None:
    import asyncio

    import httpx

    server = Server(tmp_path, {"http": {"ws_buffer": 10}})
    script = json.loads((tmp_path / "script.json").read_text())
    script["rules"].insert(0, {"match": "flood", "deltas": ["x" * 400 for _ in range(1500)]})
    (tmp_path / "script.json").write_text(json.dumps(script))
    server.start()
    try:
        async with connect(
            ws_url(server, "/ws/agent/stream"), additional_headers=server.headers, max_queue=1
        ) as socket:
            await socket.send(json.dumps({"type": "run", "input": "flood", "mode": "chat"}))
            first = json.loads(await socket.recv())
            run_id = first["run_id"]
            async with httpx.AsyncClient(base_url=server.url, headers=server.headers) as http:
                for _ in range(100):
                    status = (await http.get(f"/api/v1/agent/status/{run_id}")).json()["status"]
                    if status == "completed":
                        break
                    await asyncio.sleep(0.1)
            assert status == "completed"  # finished while this client read nothing
            frames = [first]
            while frames[-1].get("type") != "lagged":
                frames.append(json.loads(await socket.recv()))
            lagged = frames[-1]
            assert lagged["run_id"] == run_id and lagged["last_seq"] >= 1
            await socket.send(json.dumps({"type": "resume", "run_id": run_id, "after": lagged["last_seq"]}))
            resumed = json.loads(await socket.recv())
            while resumed.get("type") == "lagged" or "seq" not in resumed:
                resumed = json.loads(await socket.recv())
            assert resumed["seq"] == lagged["last_seq"] + 1
    finally:
        server.stop()
