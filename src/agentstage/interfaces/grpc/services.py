"""AgentService, ToolService and ConfigService: each method validates its request, calls the
runtime, and converts the answer. Errors are raised as agentstage errors and mapped to statuses by
the interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from agentstage.core.records import RunRecord
from agentstage.core.tools import tool_id
from agentstage.errors import AgentstageError
from agentstage.interfaces.grpc import convert
from agentstage.interfaces.grpc.chat import ChatSession
from agentstage.interfaces.grpc.gen import agent_pb2 as pb
from agentstage.interfaces.grpc.gen import agent_pb2_grpc as rpc
from agentstage.interfaces.grpc.interceptor import caller, request_id
from agentstage.interfaces.grpc.runtime import RunOwner, Runtime
from agentstage.runtime.catalog import describe
from agentstage.runtime.config_view import masked_config, remember_tool_servers

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class AgentService(rpc.AgentServiceServicer):
    def __init__(self, rt: Runtime):
        self.rt = rt

    async def Execute(self, request: pb.ExecuteRequest, context: Context) -> pb.Run:
        owner = self.rt.owner(context)
        record = await self._start(request, context, owner)
        finished = await self.rt.runs.wait(record.id)
        owner.release()
        return convert.run(finished)

    async def ExecuteStream(
        self, request: pb.ExecuteRequest, context: Context
    ) -> AsyncIterator[pb.StreamChunk]:
        owner = self.rt.owner(context)
        record = await self._start(request, context, owner)
        async for event in self.rt.runs.stream(record.id):
            if event.terminal:
                owner.release()
            yield convert.chunk(event)

    async def _start(self, request: pb.ExecuteRequest, context: Context, owner: RunOwner) -> RunRecord:
        tenant = caller().owner(self.rt.settings.security.tenants)
        record = await self.rt.runs.start(convert.run_request(request, request_id(), tenant))
        owner.own(record.id, request.detach)
        await context.send_initial_metadata((("x-run-id", record.id),))
        return record

    async def Resume(self, request: pb.ResumeRequest, context: Context) -> AsyncIterator[pb.StreamChunk]:
        run_id = convert.required(request.run_id, "run_id")
        after = convert.seq_after(request.after)
        tenant = caller().scope()
        await self.rt.runs.status(run_id, tenant)
        async for event in self.rt.runs.stream(run_id, after=after, tenant=tenant):
            yield convert.chunk(event)

    async def GetStatus(self, request: pb.GetStatusRequest, context: Context) -> pb.Run:
        return convert.run(
            await self.rt.runs.status(convert.required(request.run_id, "run_id"), caller().scope())
        )

    async def Cancel(self, request: pb.CancelRequest, context: Context) -> pb.CancelResponse:
        run_id = convert.required(request.run_id, "run_id")
        reason = request.reason or "cancelled by the user"
        record = await self.rt.runs.cancel(run_id, reason=reason, tenant=caller().scope())
        return pb.CancelResponse(
            run_id=record.id, status=convert.STATES[record.status], cancel_requested=True
        )

    async def Chat(
        self, request_iterator: AsyncIterator[pb.ChatRequest], context: Context
    ) -> AsyncIterator[pb.ChatResponse]:
        async for response in ChatSession(self.rt, context).run(request_iterator):
            yield response


class ToolService(rpc.ToolServiceServicer):
    def __init__(self, rt: Runtime):
        self.rt = rt

    async def ListTools(self, request: pb.ListToolsRequest, context: Context) -> pb.ListToolsResponse:
        tools = self.rt.runs.catalog.list_tools(request.category or None)
        return pb.ListToolsResponse(tools=[convert.tool(describe(t)) for t in tools])

    async def ExecuteTool(self, request: pb.ExecuteToolRequest, context: Context) -> pb.ToolResult:
        catalog = self.rt.runs.catalog
        tool = catalog.get(convert.required(request.tool, "tool"))
        outcome = await catalog.execute(
            request.tool, convert.json_object(request.arguments_json, "arguments_json")
        )
        result = pb.ToolResult(tool=tool_id(tool), latency_ms=outcome.latency_ms)
        if outcome.error is not None:
            result.error.code, result.error.message = outcome.error.code, outcome.error.message
        else:
            result.output_json = convert.to_json(outcome.output)
        return result

    async def RegisterTool(
        self, request: pb.RegisterToolRequest, context: Context
    ) -> pb.RegisterToolResponse:
        """The same steps as the HTTP registration: connect, remember in the user config, and undo the
        connection if it cannot be remembered (nothing half-applied)."""
        # Registered over the network: checked against security.mcp now and at every start, like
        # the HTTP registrations (the catalog names that origin "http").
        spec = convert.tool_server(request).model_copy(update={"origin": "http"})
        tools = await self.rt.runs.catalog.connect(spec)
        try:
            await remember_tool_servers(self.rt.runs)
        except AgentstageError:
            await self.rt.runs.catalog.disconnect(spec.name)
            raise
        return pb.RegisterToolResponse(tools=[convert.tool(describe(t)) for t in tools])


class ConfigService(rpc.ConfigServiceServicer):
    def __init__(self, rt: Runtime):
        self.rt = rt

    async def GetConfig(self, request: pb.GetConfigRequest, context: Context) -> pb.Config:
        return pb.Config(config_json=convert.to_json(masked_config(self.rt.settings)))

    async def ListProfiles(
        self, request: pb.ListProfilesRequest, context: Context
    ) -> pb.ListProfilesResponse:
        return convert.profiles(self.rt.settings)
