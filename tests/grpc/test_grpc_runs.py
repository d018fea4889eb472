"""AgentService against a real ``agent serve --grpc-port`` through real grpc.aio channels: every RPC,
streaming and resuming by seq, deadlines and cancelled calls cancelling their run (unless detached),
bad requests mapped to the right codes, and one runtime shared with the HTTP door."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import GrpcServer, details, message, stubs, wait_for_status

from agentstage.interfaces.grpc.gen import agent_pb2 as pb

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    running = GrpcServer(
        tmp_path_factory.mktemp("grpc-home"), {"grpc": {"max_receive_message_bytes": 65536}}
    ).start()
    yield running
    running.stop()


def chat(text: str, **fields: Any) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(input=text, mode="chat", **fields)


async def test_execute_waits_and_answers_with_the_run(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        call = agent.Execute(chat("hello"), metadata=server.metadata)
        run_id = dict(await call.initial_metadata())["x-run-id"]
        run = await call
        assert run.run_id == run_id and run.status == pb.RUN_STATE_COMPLETED
        assert run.output == "Hello from the server." and run.mode == "chat" and run.profile == "t"
        assert run.usage["output_tokens"] > 0 and run.last_seq >= 5 and run.input == "hello"
        assert run.timings.finished_at.ToDatetime() >= run.timings.created_at.ToDatetime()
        status = await agent.GetStatus(pb.GetStatusRequest(run_id=run_id), metadata=server.metadata)
        assert status == run
    with server.client() as http:  # one runtime behind both doors
        assert http.get(f"/api/v1/agent/status/{run_id}").json()["output"] == "Hello from the server."


async def test_execute_stream_mirrors_the_event_log(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        chunks = [c async for c in agent.ExecuteStream(chat("ticks please"), metadata=server.metadata)]
    assert [c.seq for c in chunks] == list(range(1, len(chunks) + 1))
    assert chunks[0].type == "run.queued" and chunks[-1].type == "run.completed"
    assert sum(c.type == "message.delta" for c in chunks) == 30
    with server.client() as http, http.stream("GET", f"/api/v1/agent/runs/{chunks[0].run_id}/events") as sse:
        stored = [json.loads(line[6:]) for line in sse.iter_lines() if line.startswith("data: ")]
    assert len(stored) == len(chunks)
    for chunk, event in zip(chunks, stored, strict=True):
        assert (chunk.run_id, chunk.seq, chunk.type) == (event["run_id"], event["seq"], event["type"])
        assert json.loads(chunk.data) == event["data"]
        assert chunk.ts.ToDatetime().isoformat() == event["ts"][:26].rstrip("+")
        assert chunk.trace_id == event["trace_id"]


async def test_resume_streams_exactly_the_events_after_a_seq(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        stream = agent.ExecuteStream(chat("ticks to resume", detach=True), metadata=server.metadata)
        first = [await stream.read() for _ in range(6)]
        stream.cancel()  # detached: the run goes on without this call
        run_id = first[0].run_id
        resumed = [
            c async for c in agent.Resume(pb.ResumeRequest(run_id=run_id, after=6), metadata=server.metadata)
        ]
        assert [c.seq for c in resumed] == list(range(7, 7 + len(resumed)))
        assert resumed[-1].type == "run.completed"
        final = await wait_for_status(agent, run_id, server.metadata)
        assert final.status == pb.RUN_STATE_COMPLETED and final.last_seq == resumed[-1].seq
        tail = [
            c async for c in agent.Resume(pb.ResumeRequest(run_id=run_id, after=final.last_seq - 2), metadata=server.metadata)
        ]  # fmt: skip
        assert [c.seq for c in tail] == [final.last_seq - 1, final.last_seq]


async def test_a_deadline_cancels_the_run(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        call = agent.Execute(chat("slow deadline"), metadata=server.metadata, timeout=0.8)
        run_id = dict(await call.initial_metadata())["x-run-id"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        run = await wait_for_status(agent, run_id, server.metadata)
        assert run.status == pb.RUN_STATE_CANCELLED
        assert run.error.code == "cancelled" and "deadline" in run.error.message
        events = [c async for c in agent.Resume(pb.ResumeRequest(run_id=run_id), metadata=server.metadata)]
        assert events[-1].type == "run.cancelled"
        assert json.loads(events[-1].data)["partial_output"].startswith("w0 ")


async def test_a_cancelled_stream_cancels_its_run(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        stream = agent.ExecuteStream(chat("slow stream"), metadata=server.metadata)
        while (await stream.read()).type != "message.delta":
            pass
        run_id = dict(await stream.initial_metadata())["x-run-id"]
        stream.cancel()
        run = await wait_for_status(agent, run_id, server.metadata)
        assert run.status == pb.RUN_STATE_CANCELLED and run.error.code == "cancelled"


async def test_a_detached_run_outlives_its_deadline(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        call = agent.Execute(chat("ticks detached", detach=True), metadata=server.metadata, timeout=0.3)
        run_id = dict(await call.initial_metadata())["x-run-id"]
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        run = await wait_for_status(agent, run_id, server.metadata)
        assert run.status == pb.RUN_STATE_COMPLETED and run.output.startswith("t0 t1")


async def test_cancel_a_running_run_then_a_finished_one(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        stream = agent.ExecuteStream(chat("slow to cancel"), metadata=server.metadata)
        run_id = (await stream.read()).run_id
        accepted = await agent.Cancel(
            pb.CancelRequest(run_id=run_id, reason="enough"), metadata=server.metadata
        )
        assert accepted.run_id == run_id and accepted.cancel_requested
        last = (await rest(stream))[-1]
        assert last.type == "run.cancelled"
        assert json.loads(last.data)["reason"] == "enough"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await agent.Cancel(pb.CancelRequest(run_id=run_id), metadata=server.metadata)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        found = details(caught.value)
        assert found["reason"] == "run_finished" and found["x-error-code"] == "run_finished"
        assert "cancelled" in message(caught.value)


async def test_an_http_cancel_reaches_a_grpc_run_at_once(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        stream = agent.ExecuteStream(chat("slow across doors"), metadata=server.metadata)
        run_id = (await stream.read()).run_id
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers) as http:
            assert (await http.delete(f"/api/v1/agent/cancel/{run_id}")).status_code == 202
        kinds = [c.type for c in await rest(stream)]
        assert kinds[-1] == "run.cancelled" and kinds.count("message.delta") < 40


async def rest(stream: Any) -> list[pb.StreamChunk]:
    """The rest of a stream already read with ``read()`` (grpc.aio forbids mixing in iteration)."""
    found = []
    while (item := await stream.read()) is not grpc.aio.EOF:
        found.append(item)
    return found


async def expect(code: grpc.StatusCode, call: Any) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        result = call
        if hasattr(result, "__aiter__"):
            [_ async for _ in result]
        else:
            await result
    assert caught.value.code() == code, caught.value.details()
    found = details(caught.value)
    found["message"] = message(caught.value)
    return found


async def test_bad_requests_get_the_right_codes_naming_the_field(server: GrpcServer) -> None:
    md = server.metadata
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        empty = await expect(grpc.StatusCode.INVALID_ARGUMENT, agent.Execute(chat("  "), metadata=md))
        assert empty["reason"] == "empty_input" and "input" in empty["fields"]
        assert empty["message"].startswith("input:")
        profile = await expect(
            grpc.StatusCode.INVALID_ARGUMENT, agent.Execute(chat("hi", profile="nope"), metadata=md)
        )
        assert "profile" in profile["fields"] and "'nope'" in profile["message"]
        mode = await expect(grpc.StatusCode.INVALID_ARGUMENT, agent.ExecuteStream(pb.ExecuteRequest(input="hi", mode="dance"), metadata=md))  # fmt: skip
        assert "mode" in mode["fields"] and "'dance'" in mode["message"]
        steps = await expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            agent.Execute(chat("hi", options=pb.RunOptions(max_steps=0)), metadata=md),
        )
        assert "options.max_steps" in steps["fields"]
        params = await expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            agent.Execute(chat("hi", options=pb.RunOptions(params_json="{nope")), metadata=md),
        )
        assert "options.params_json" in params["fields"]
        for not_json, says in (
            ('{"temperature": NaN}', "NaN is not a JSON number"),
            ('{"stop": "\\ud800"}', "unpaired surrogate"),
        ):
            refused = await expect(
                grpc.StatusCode.INVALID_ARGUMENT,
                agent.Execute(chat("hi", options=pb.RunOptions(params_json=not_json)), metadata=md),
            )
            assert "options.params_json" in refused["fields"] and says in refused["message"], refused
        no_id = await expect(
            grpc.StatusCode.INVALID_ARGUMENT, agent.GetStatus(pb.GetStatusRequest(), metadata=md)
        )
        assert "run_id" in no_id["fields"]
        beyond = await expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            agent.Resume(pb.ResumeRequest(run_id="x", after=2**60), metadata=md),
        )
        assert "after" in beyond["fields"]
        for call in (
            agent.GetStatus(pb.GetStatusRequest(run_id="no-such-run"), metadata=md),
            agent.Cancel(pb.CancelRequest(run_id="no-such-run"), metadata=md),
            agent.Resume(pb.ResumeRequest(run_id="no-such-run"), metadata=md),
            agent.Execute(chat("hi", conversation_id="no-such-conversation"), metadata=md),
        ):
            missing = await expect(grpc.StatusCode.NOT_FOUND, call)
            assert "no-such-" in missing["message"]
        unknown_tool = await expect(
            grpc.StatusCode.NOT_FOUND,
            agent.Execute(
                chat("hi", options=pb.RunOptions(tools=pb.ToolSelection(names=["nope"]))), metadata=md
            ),
        )
        assert unknown_tool["reason"] == "tool_not_found"
        huge = await expect(
            grpc.StatusCode.RESOURCE_EXHAUSTED, agent.Execute(chat("x" * 70_000), metadata=md)
        )
        assert "larger than max" in huge["message"]


async def test_run_options_reach_the_run(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        options = pb.RunOptions(
            max_steps=3, params_json='{"temperature": 0.5}', tools=pb.ToolSelection(names=["math.calculate"])
        )
        chunks = [c async for c in agent.ExecuteStream(chat("hi", options=options), metadata=server.metadata)]
    queued = json.loads(chunks[0].data)
    assert queued["options"] == {"max_steps": 3, "params": {"temperature": 0.5}, "tools": ["math.calculate"]}
    request = json.loads(next(c for c in chunks if c.type == "model.request").data)
    assert request["params"]["temperature"] == 0.5


async def test_the_call_log_names_method_code_and_key(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        request_id = "trace-me-123"
        await agent.Execute(chat("hello"), metadata=(*server.metadata, ("x-request-id", request_id)))
    await asyncio.sleep(0.2)
    lines = [json.loads(line) for line in server.log().splitlines() if '"grpc.call"' in line]
    mine = [line for line in lines if line["request_id"] == request_id]
    assert mine and mine[0]["method"] == "/agentstage.v1.AgentService/Execute"
    assert mine[0]["code"] == "OK" and mine[0]["principal"] == "api_key:tests"
    assert server.key not in server.log()
