"""Chat, ToolService and ConfigService against a real ``agent serve --grpc-port``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_harness import GrpcServer, details, stubs, wait_for_status

from agentstage.interfaces.grpc.gen import agent_pb2 as pb

pytestmark = pytest.mark.anyio

TIME_SERVER = pb.RegisterToolRequest(
    name="time", command=sys.executable, args=["-m", "mcp_server_time", "--local-timezone", "UTC"]
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServer]:
    home = tmp_path_factory.mktemp("grpc-services-home")
    providers = {
        "s": {"type": "scripted", "script": str(home / "script.json")},
        "hosted": {"type": "openai", "api_key": "sk-test-0123456789abcdef"},
    }
    policy = {"mcp": {"allow_commands": True, "executables": [sys.executable], "timeout": 30}}
    running = GrpcServer(home, {"providers": providers, "security": policy}).start()
    yield running
    running.stop()


def say(text: str, **fields: Any) -> pb.ChatRequest:
    return pb.ChatRequest(message=pb.ChatMessage(input=text, mode="chat", **fields))


async def test_chat_keeps_one_conversation_across_messages(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        call = agent.Chat(metadata=server.metadata)
        await call.write(say("my name is Ada"))
        await call.write(say("what is my name"))
        await call.done_writing()
        responses = [r async for r in call]
        opened = responses[0].conversation
        assert opened.created and opened.conversation_id
        events = [r.event for r in responses[1:]]
        ends = [e for e in events if e.type == "run.completed"]
        assert [json.loads(e.data)["output"] for e in ends] == ["Hello Ada.", "Your name is Ada."]
        second_request = [e for e in events if e.type == "model.request"][-1]
        history = [m["content"] for m in json.loads(second_request.data)["messages"]]
        assert "my name is Ada" in history and "Hello Ada." in history

        again = agent.Chat(metadata=server.metadata)
        await again.write(say("what is my name", conversation_id=opened.conversation_id))
        await again.done_writing()
        more = [r async for r in again]
        assert more[0].conversation.conversation_id == opened.conversation_id
        assert not more[0].conversation.created
    with server.client() as http:
        stored = http.get(f"/api/v1/conversations/{opened.conversation_id}/history").json()["messages"]
        assert [m["role"] for m in stored] == ["user", "assistant"] * 3


async def test_chat_cancel_stops_the_current_run_and_goes_on(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        call = agent.Chat(metadata=server.metadata)
        await call.write(say("slow first"))
        await call.write(say("name is Ada"))
        seen: list[pb.StreamChunk] = []
        while True:
            response = await call.read()
            if response.HasField("event"):
                seen.append(response.event)
                if response.event.type == "message.delta" and len(seen) < 10:
                    await call.write(pb.ChatRequest(cancel=pb.ChatCancel()))
                if response.event.type == "run.completed":
                    break
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
    terminal = [
        e.type for e in seen if e.type.startswith("run.") and e.type not in ("run.queued", "run.started")
    ]
    assert terminal == ["run.cancelled", "run.completed"]


async def test_a_chat_call_cancelled_mid_run_cancels_that_run(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        call = agent.Chat(metadata=server.metadata)
        await call.write(say("slow then gone"))
        run_id = ""
        while not run_id:
            response = await call.read()
            run_id = response.event.run_id if response.HasField("event") else ""
        call.cancel()
        run = await wait_for_status(agent, run_id, server.metadata)
        assert run.status == pb.RUN_STATE_CANCELLED


async def test_bad_chat_messages_name_their_field(server: GrpcServer) -> None:
    async with server.channel() as channel:
        agent, _, _ = stubs(channel)
        for requests, code, field in (
            ([say("")], grpc.StatusCode.INVALID_ARGUMENT, "message.input"),
            ([say("hi", profile="nope")], grpc.StatusCode.INVALID_ARGUMENT, "message.profile"),
            ([say("hi", conversation_id="missing")], grpc.StatusCode.NOT_FOUND, None),
            ([pb.ChatRequest()], grpc.StatusCode.INVALID_ARGUMENT, "action"),
        ):
            call = agent.Chat(iter(requests), metadata=server.metadata)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                [_ async for _ in call]
            assert caught.value.code() == code, caught.value.details()
            if field:
                assert field in details(caught.value)["fields"], caught.value.details()


async def test_list_and_execute_tools(server: GrpcServer) -> None:
    async with server.channel() as channel:
        _, tools, _ = stubs(channel)
        listed = (await tools.ListTools(pb.ListToolsRequest(), metadata=server.metadata)).tools
        calc = next(t for t in listed if t.name == "math.calculate")
        assert (
            calc.id == f"math.calculate:{calc.version}"
            and "expression" in json.loads(calc.parameters_json)["properties"]
        )
        only = (
            await tools.ListTools(pb.ListToolsRequest(category=calc.category), metadata=server.metadata)
        ).tools
        assert only and {t.category for t in only} == {calc.category}
        result = await tools.ExecuteTool(
            pb.ExecuteToolRequest(tool="math.calculate", arguments_json='{"expression": "6*7"}'),
            metadata=server.metadata,
        )
        assert (
            result.tool == calc.id
            and json.loads(result.output_json) == {"result": 42}
            and not result.HasField("error")
        )
        failed = await tools.ExecuteTool(
            pb.ExecuteToolRequest(tool="math.calculate", arguments_json='{"expression": "1/0"}'),
            metadata=server.metadata,
        )
        assert failed.error.code and failed.output_json == ""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await tools.ExecuteTool(pb.ExecuteToolRequest(tool="math.calculate", arguments_json='{"expression": 3}'), metadata=server.metadata)  # fmt: skip
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "arguments_json.expression" in details(caught.value)["fields"]
        for request, code in (
            (pb.ExecuteToolRequest(tool="nope"), grpc.StatusCode.NOT_FOUND),
            (pb.ExecuteToolRequest(tool=""), grpc.StatusCode.INVALID_ARGUMENT),
            (
                pb.ExecuteToolRequest(tool="math.calculate", arguments_json="[1]"),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await tools.ExecuteTool(request, metadata=server.metadata)
            assert caught.value.code() == code


async def test_register_an_mcp_server_like_the_http_route(server: GrpcServer) -> None:
    async with server.channel() as channel:
        _, tools, _ = stubs(channel)
        registered = await tools.RegisterTool(TIME_SERVER, metadata=server.metadata)
        ids = {t.id for t in registered.tools}
        assert {"time.get_current_time:mcp", "time.convert_time:mcp"} <= ids
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await tools.RegisterTool(TIME_SERVER, metadata=server.metadata)
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        result = await tools.ExecuteTool(
            pb.ExecuteToolRequest(tool="time.get_current_time", arguments_json='{"timezone": "Asia/Tokyo"}'),
            metadata=server.metadata,
        )
        assert json.loads(result.output_json)["timezone"] == "Asia/Tokyo"
        for request, code, field in (
            (pb.RegisterToolRequest(name="x"), grpc.StatusCode.INVALID_ARGUMENT, None),
            (pb.RegisterToolRequest(name="Bad Name!", command="x"), grpc.StatusCode.INVALID_ARGUMENT, "name"),
            (
                pb.RegisterToolRequest(name="ghost", command="/bin/sh"),
                grpc.StatusCode.PERMISSION_DENIED,
                None,
            ),
        ):  # the last: an executable outside security.mcp's allow-list, even for an admin
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await tools.RegisterTool(request, metadata=server.metadata)
            assert caught.value.code() == code, caught.value.details()
            if field:
                assert field in details(caught.value)["fields"]
        listed = await tools.ListTools(pb.ListToolsRequest(), metadata=server.metadata)
        assert not [t for t in listed.tools if t.name.startswith("ghost")]
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # the attacker without a key
            await tools.RegisterTool(pb.RegisterToolRequest(name="evil", command="/bin/sh"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    config = json.loads((server.home / "config.json").read_text())
    assert [entry["name"] for entry in config["tools"]["mcp_servers"]] == ["time"]


async def test_config_is_masked_and_profiles_listed(server: GrpcServer) -> None:
    async with server.channel() as channel:
        _, _, config = stubs(channel)
        shown = json.loads(
            (await config.GetConfig(pb.GetConfigRequest(), metadata=server.metadata)).config_json
        )
        assert shown["default_profile"] == "t" and shown["providers"]["hosted"]["api_key"] == "***"
        assert "0123456789abcdef" not in json.dumps(shown)
        listed = await config.ListProfiles(pb.ListProfilesRequest(), metadata=server.metadata)
        assert listed.default_profile == "t"
        profiles = {p.name: p for p in listed.profiles}
        assert profiles["t"].is_default and [e.provider for e in profiles["t"].chain] == ["s"]
        assert {"local", "fast", "quality"} <= set(profiles)
        assert json.loads(profiles["fast"].limits_json) == {"max_steps": 4}
