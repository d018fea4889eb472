"""Planner mode: the model writes a plan of JSON steps, each step runs, a final step answers.

The plan is a ``plan.created`` event so the user sees it before it runs. Tool steps run the named
tool with the planned arguments; model steps ask the model to do the described sub-task with
the results so far; the ``synthesize`` step streams the final answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from agentstage.core.events import ErrorInfo, EventDraft, PlanCreated, PlanStep
from agentstage.core.messages import Message, ToolCall, new_call_id
from agentstage.core.model import ModelRequest
from agentstage.core.orchestrators.actions import parse_plan, plan_schema
from agentstage.core.orchestrators.base import AgentContext, ModelCall, Step, ToolRun
from agentstage.errors import ModelError

PLAN_ATTEMPTS = 2


class PlannerOrchestrator:
    template: ClassVar[str] = "plan/agent-plan.j2"

    async def run(self, ctx: AgentContext) -> AsyncIterator[EventDraft]:
        plan: list[PlanStep] = []
        async for draft in self._plan(ctx, plan):
            yield draft
        yield EventDraft.of(PlanCreated(steps=plan))
        results: list[tuple[PlanStep, str]] = []
        for planned in plan:
            async for draft in self._execute(ctx, planned, results):
                yield draft
        step = Step(ctx, "synthesize", "answer")
        yield step.started()
        prompt = ctx.prompts.render("plan/synthesize.j2", question=ctx.input, results=results)
        request = ModelRequest(messages=[*ctx.history, Message.user(prompt)])
        call = ModelCall(ctx, request, span_id=step.span_id, stream_text=True)
        async for draft in call.run():
            yield draft
        assert call.response is not None
        ctx.output = call.response.message.content
        yield step.finished()

    async def _plan(self, ctx: AgentContext, plan: list[PlanStep]) -> AsyncIterator[EventDraft]:
        system = ctx.prompts.render(self.template, tools=ctx.tools.specs(), max_steps=ctx.limits.max_steps)
        messages = [Message.system(system), *ctx.history, Message.user(ctx.input)]
        schema = plan_schema(ctx.tools, ctx.limits.max_steps)
        last_error: ModelError | None = None
        for _attempt in range(PLAN_ATTEMPTS):
            step = Step(ctx, "plan", "plan")
            yield step.started()
            call = ModelCall(
                ctx,
                ModelRequest(messages=list(messages), response_format=schema),
                span_id=step.span_id,
                stream_text=False,
            )
            async for draft in call.run():
                yield draft
            assert call.response is not None
            try:
                plan.extend(parse_plan(call.response.message.content, ctx.tools, ctx.limits.max_steps))
            except ModelError as error:
                last_error = error
                yield step.finished(ErrorInfo(code=error.code, message=error.message))
                messages += [
                    Message.assistant(call.response.message.content),
                    Message.user(f"That plan was not valid: {error.message}. Write the plan again as JSON."),
                ]
                continue
            yield step.finished()
            return
        assert last_error is not None
        raise last_error

    async def _execute(
        self, ctx: AgentContext, planned: PlanStep, results: list[tuple[PlanStep, str]]
    ) -> AsyncIterator[EventDraft]:
        if planned.tool:
            step = Step(ctx, "tool", ctx.tools.qualified(planned.tool))
            yield step.started()
            call = ToolCall(id=new_call_id("tool"), name=planned.tool, arguments=planned.arguments)
            run = ToolRun(ctx, call, span_id=step.span_id)
            async for draft in run.run():
                yield draft
            yield step.finished(run.outcome.error)
            results.append((planned, run.outcome.for_model()))
            return
        step = Step(ctx, "llm", f"step {planned.id}")
        yield step.started()
        prompt = ctx.prompts.render("plan/step.j2", question=ctx.input, step=planned, results=results)
        model_call = ModelCall(
            ctx, ModelRequest(messages=[Message.user(prompt)]), span_id=step.span_id, stream_text=False
        )
        async for draft in model_call.run():
            yield draft
        assert model_call.response is not None
        yield step.finished()
        results.append((planned, model_call.response.message.content))
