"""Chat mode: answer directly from the conversation so far, streaming the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from agentstage.core.events import EventDraft
from agentstage.core.messages import Message
from agentstage.core.model import ModelRequest
from agentstage.core.orchestrators.base import AgentContext, ModelCall, Step
from agentstage.core.orchestrators.budget import fit_messages
from agentstage.core.orchestrators.policy import check_answer, model_label


class ChatOrchestrator:
    template: ClassVar[str] = "chat/system.j2"

    async def run(self, ctx: AgentContext) -> AsyncIterator[EventDraft]:
        system = ctx.prompts.render(self.template)
        messages = [Message.system(system), *ctx.history, Message.user(ctx.input)]
        wanted = int(ctx.params.get("max_tokens", 512))
        fitted, room = fit_messages(ctx.model, messages, pinned={0, len(messages) - 1}, max_tokens=wanted)
        step = Step(ctx, "llm", "answer")
        yield step.started()
        request = ModelRequest(messages=fitted, params={"max_tokens": room})
        call = ModelCall(ctx, request, span_id=step.span_id, stream_text=True)
        async for draft in call.run():
            yield draft
        assert call.response is not None
        # A reply cut by max_tokens is still the reply asked for; an empty one is not an answer.
        ctx.output = check_answer(call.response.message.content, "stop", model_label(ctx.model))
        yield step.finished()
