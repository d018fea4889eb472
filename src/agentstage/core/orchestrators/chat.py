"""Chat mode: answer directly from the conversation so far, streaming the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from agentstage.core.events import EventDraft
from agentstage.core.messages import Message
from agentstage.core.model import ModelRequest
from agentstage.core.orchestrators.base import AgentContext, ModelCall, Step


class ChatOrchestrator:
    template: ClassVar[str] = "chat/system.j2"

    async def run(self, ctx: AgentContext) -> AsyncIterator[EventDraft]:
        system = ctx.prompts.render(self.template)
        messages = [Message.system(system), *ctx.history, Message.user(ctx.input)]
        step = Step(ctx, "llm", "answer")
        yield step.started()
        call = ModelCall(ctx, ModelRequest(messages=messages), span_id=step.span_id, stream_text=True)
        async for draft in call.run():
            yield draft
        assert call.response is not None
        ctx.output = call.response.message.content
        yield step.finished()
