"""React mode: think, call tools, observe, until the model answers or ``max_steps`` is reached.

Models with native tool calls get the tool definitions; others are asked for a JSON action
constrained by :func:`action_schema`. An invalid action or a failing tool is recorded as a failed
step and fed back to the model, which gets another turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from agentstage.core.events import ErrorInfo, EventDraft, MessageDelta
from agentstage.core.messages import Message, ToolCall
from agentstage.core.model import ModelRequest, ModelResponse
from agentstage.core.orchestrators.actions import Answer, action_schema, parse_action
from agentstage.core.orchestrators.base import AgentContext, ModelCall, Step, ToolRun
from agentstage.errors import ModelError


class ReactOrchestrator:
    template: ClassVar[str] = "react/agent-react.j2"

    async def run(self, ctx: AgentContext) -> AsyncIterator[EventDraft]:
        json_actions = not ctx.model.native_tools
        system = ctx.prompts.render(self.template, tools=ctx.tools.specs(), json_actions=json_actions)
        messages = [Message.system(system), *ctx.history, Message.user(ctx.input)]
        for steps_taken in range(ctx.limits.max_steps):
            step = Step(ctx, "llm", f"think {steps_taken + 1}")
            yield step.started()
            request = self._request(ctx, messages, json_actions)
            call = ModelCall(ctx, request, span_id=step.span_id, stream_text=not json_actions)
            async for draft in call.run():
                yield draft
            assert call.response is not None
            try:
                actions = self._actions(ctx, call.response, json_actions)
            except ModelError as error:
                yield step.finished(ErrorInfo(code=error.code, message=error.message))
                messages += [
                    Message.assistant(call.response.message.content),
                    Message.user(
                        f"That was not a valid action: {error.message}. Reply with one valid JSON action."
                    ),
                ]
                continue
            yield step.finished()
            if isinstance(actions, Answer):
                if json_actions:
                    ctx.partial_output += actions.text
                    yield EventDraft.of(MessageDelta(call_id=call.call_id, text=actions.text), step.span_id)
                ctx.output = actions.text
                return
            messages.append(
                Message.assistant(call.response.message.content, actions if not json_actions else None)
            )
            for tool_call in actions:
                async for draft in self._tool_step(ctx, tool_call, messages, json_actions):
                    yield draft
        raise ctx.limits.steps_exhausted(ctx.limits.max_steps)

    def _request(self, ctx: AgentContext, messages: list[Message], json_actions: bool) -> ModelRequest:
        if json_actions:
            return ModelRequest(messages=list(messages), response_format=action_schema(ctx.tools))
        return ModelRequest(messages=list(messages), tools=ctx.tools.specs())

    def _actions(
        self, ctx: AgentContext, response: ModelResponse, json_actions: bool
    ) -> Answer | list[ToolCall]:
        if not json_actions:
            return response.tool_calls or Answer(text=response.message.content)
        action = parse_action(response.message.content, ctx.tools)
        return action if isinstance(action, Answer) else [action]

    async def _tool_step(
        self, ctx: AgentContext, call: ToolCall, messages: list[Message], json_actions: bool
    ) -> AsyncIterator[EventDraft]:
        step = Step(ctx, "tool", ctx.tools.qualified(call.name))
        yield step.started()
        run = ToolRun(ctx, call, span_id=step.span_id)
        async for draft in run.run():
            yield draft
        yield step.finished(run.outcome.error)
        observation = run.outcome.for_model()
        if json_actions:
            messages.append(Message.user(f"Observation from {call.name}: {observation}"))
        else:
            messages.append(Message.tool(observation, tool_call_id=call.id, name=call.name))
