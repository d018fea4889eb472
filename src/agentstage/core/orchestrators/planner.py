"""Planner mode: the model writes a plan of JSON steps, each step runs, a final step answers.

The plan is a ``plan.created`` event so the user sees it before it runs; its steps keep their
numbers in the events that follow (plan step 2 runs as step ``2``). Tool steps run the named tool
with the planned arguments; model steps ask the model to do the described sub-task with the
results so far; the ``synthesize`` step streams the final answer.

For models without native tool calls the plan is written under a grammar (valid by construction,
real tools only, worked examples close to the input), and the answer can only be made of what
the tools returned. A plan whose every tool step failed ends the run ``failed``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import ClassVar

from agentstage.core.events import ErrorInfo, EventDraft, PlanCreated, PlanStep
from agentstage.core.guidance import ToolExample, examples_of, hinted, nearest_examples, quote, with_hints
from agentstage.core.ids import new_call_id
from agentstage.core.messages import Message, ToolCall
from agentstage.core.model import ModelRequest
from agentstage.core.orchestrators.actions import parse_plan, plan_schema
from agentstage.core.orchestrators.base import AgentContext, ModelCall, Step, ToolRun
from agentstage.core.orchestrators.budget import fit_messages
from agentstage.core.orchestrators.grammar import choice_grammar, plan_grammar
from agentstage.core.orchestrators.policy import FailureLog, check_answer, model_label, signature
from agentstage.core.orchestrators.routing import routed_tools, several_steps
from agentstage.errors import ModelError

PLAN_ATTEMPTS = 2
PLAN_MAX_TOKENS = 480
EXAMPLES = 2


def _plan_text(examples: list[ToolExample]) -> str:
    steps = [{"description": e.input, "tool": e.tool, "arguments": e.arguments} for e in examples]
    return json.dumps({"steps": steps}, ensure_ascii=False)


class PlannerOrchestrator:
    template: ClassVar[str] = "plan/agent-plan.j2"

    async def run(self, ctx: AgentContext) -> AsyncIterator[EventDraft]:
        structured = not ctx.model.native_tools
        plan: list[PlanStep] = []
        async for draft in self._plan(ctx, plan, structured):
            yield draft
        yield EventDraft.of(PlanCreated(steps=plan))
        results: list[tuple[PlanStep, str]] = []
        quotes: list[str] = []
        failures = FailureLog(model_label(ctx.model))
        done: dict[str, str] = {}
        for planned in plan:
            async for draft in self._execute(ctx, planned, len(plan), results, quotes, failures, done):
                yield draft
        failed = failures.all_tools_failed()
        if failed is not None:
            raise failed
        async for draft in self._synthesize(ctx, results, quotes, structured):
            yield draft

    # planning ---------------------------------------------------------------------------------

    def _messages(self, ctx: AgentContext, structured: bool) -> tuple[list[Message], int]:
        system = ctx.prompts.render(self.template, tools=ctx.tools.specs(), max_steps=ctx.limits.max_steps)
        messages = [Message.system(system)]
        if structured:
            messages += self._examples(ctx)
        messages += ctx.history
        messages.append(Message.user(with_hints(ctx.tools, ctx.input) if structured else ctx.input))
        return messages, len(messages) - 1

    @staticmethod
    def _examples(ctx: AgentContext) -> list[Message]:
        """Two worked plans: the closest example alone, and the two closest as a two-step plan;
        the one shaped like the input (one step or several) comes last, where a small model
        copies from."""
        required = routed_tools(ctx.input, ctx.tools)
        pool = [e for tool in ctx.tools for e in examples_of(tool) if not required or e.tool in required]
        chosen = nearest_examples(hinted(ctx.tools, pool), with_hints(ctx.tools, ctx.input), EXAMPLES)
        if not chosen:
            return []
        single = [Message.user(chosen[-1].input), Message.assistant(_plan_text([chosen[-1]]))]
        if len(chosen) < 2:
            return single
        first, second = chosen[-1], chosen[-2]
        question = (
            f"{first.input.split(chr(10))[0].rstrip('?.')}, then {second.input[0].lower()}{second.input[1:]}"
        )
        double = [Message.user(question), Message.assistant(_plan_text([first, second]))]
        return single + double if several_steps(ctx.input) else double + single

    async def _plan(
        self, ctx: AgentContext, plan: list[PlanStep], structured: bool
    ) -> AsyncIterator[EventDraft]:
        messages, input_index = self._messages(ctx, structured)
        schema = plan_schema(ctx.tools, ctx.limits.max_steps)
        grammar = plan_grammar(ctx.tools, ctx.limits.max_steps) if structured and len(ctx.tools) else None
        last_error: ModelError | None = None
        for attempt in range(1, PLAN_ATTEMPTS + 1):
            step = Step(ctx, "plan", "plan", step_id="plan" if attempt == 1 else f"plan-{attempt}")
            yield step.started()
            wanted = min(int(ctx.params.get("max_tokens", 512)), PLAN_MAX_TOKENS)
            fitted, room = fit_messages(ctx.model, messages, pinned={0, input_index}, max_tokens=wanted)
            request = ModelRequest(
                messages=fitted,
                response_format=schema,
                grammar=grammar,
                params={"max_tokens": room, "temperature": 0.0},
            )
            call = ModelCall(ctx, request, span_id=step.span_id, stream_text=False)
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
        last_error.message = f"{model_label(ctx.model)} could not write a valid plan: {last_error.message}"
        raise last_error

    # executing --------------------------------------------------------------------------------

    async def _execute(
        self,
        ctx: AgentContext,
        planned: PlanStep,
        total: int,
        results: list[tuple[PlanStep, str]],
        quotes: list[str],
        failures: FailureLog,
        done: dict[str, str],
    ) -> AsyncIterator[EventDraft]:
        step_id = str(planned.id)
        if planned.tool:
            call = ToolCall(id=new_call_id("tool"), name=planned.tool, arguments=planned.arguments)
            step = Step(ctx, "tool", ctx.tools.qualified(planned.tool), step_id=step_id)
            yield step.started()
            key = signature(call)
            if key in done:  # the plan repeats an earlier step: its result is already known
                yield step.finished()
                results.append((planned, done[key]))
                return
            run = ToolRun(ctx, call, span_id=step.span_id)
            async for draft in run.run():
                yield draft
            yield step.finished(run.outcome.error)
            failures.tool_result(call, run.outcome.error)
            if run.outcome.error is None:
                quotes.append(quote(ctx.tools.get(planned.tool), run.outcome.output))
                done[key] = run.outcome.for_model()
            results.append((planned, run.outcome.for_model()))
            return
        step = Step(ctx, "llm", f"step {planned.id}/{total}", step_id=step_id)
        yield step.started()
        prompt = ctx.prompts.render("plan/step.j2", question=ctx.input, step=planned, results=results)
        messages, room = fit_messages(
            ctx.model, [Message.user(prompt)], pinned={0}, max_tokens=int(ctx.params.get("max_tokens", 512))
        )
        model_call = ModelCall(
            ctx,
            ModelRequest(messages=messages, params={"max_tokens": room}),
            span_id=step.span_id,
            stream_text=False,
        )
        async for draft in model_call.run():
            yield draft
        assert model_call.response is not None
        yield step.finished()
        results.append((planned, model_call.response.message.content))

    async def _synthesize(
        self, ctx: AgentContext, results: list[tuple[PlanStep, str]], quotes: list[str], structured: bool
    ) -> AsyncIterator[EventDraft]:
        step = Step(ctx, "synthesize", "answer", step_id="answer")
        yield step.started()
        prompt = ctx.prompts.render("plan/synthesize.j2", question=ctx.input, results=results)
        history = list(ctx.history)
        messages, room = fit_messages(
            ctx.model,
            [*history, Message.user(prompt)],
            pinned={len(history)},
            max_tokens=int(ctx.params.get("max_tokens", 512)),
        )
        grammar = (
            choice_grammar(list(dict.fromkeys(quotes)), most=len(quotes)) if structured and quotes else None
        )
        params: dict[str, object] = {"max_tokens": room}
        if grammar is not None:
            params["temperature"] = 0.0
        call = ModelCall(
            ctx,
            ModelRequest(messages=messages, grammar=grammar, params=params),
            span_id=step.span_id,
            stream_text=True,
        )
        async for draft in call.run():
            yield draft
        assert call.response is not None
        ctx.output = check_answer(
            call.response.message.content, call.response.finish_reason, model_label(ctx.model)
        )
        yield step.finished()
