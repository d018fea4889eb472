"""React mode: think, call tools, observe, until the model answers or ``max_steps`` is reached.

Models with native tool calls get the tool definitions. Others get a JSON action per call, under a
grammar that makes it valid by construction (``grammar.py``), greedy, shown worked examples close
to the input, and:

- when the router matched tools for the input, the first action must call one of them;
- after a tool succeeded, the answer can only quote what a tool returned (a small model that
  re-derives a number gets it wrong; the tool does not);
- the same call is never run twice: a repeat makes the next action an answer.

A repeated failure changes the prompt, then stops the run (``policy.py``); a run whose every tool
call failed, or that ends on an empty or cut-off answer, ends ``failed``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

from agentstage.core.events import ErrorInfo, EventDraft, MessageDelta
from agentstage.core.guidance import (
    ToolExample,
    example_result,
    examples_of,
    hinted,
    nearest_examples,
    quote,
    with_hints,
)
from agentstage.core.messages import Message, ToolCall
from agentstage.core.model import ModelRequest, ModelResponse
from agentstage.core.orchestrators.actions import Answer, action_schema, parse_action
from agentstage.core.orchestrators.base import AgentContext, ModelCall, Step, ToolRun
from agentstage.core.orchestrators.budget import fit_messages
from agentstage.core.orchestrators.grammar import action_grammar
from agentstage.core.orchestrators.policy import (
    REPAIR_AFTER,
    STOP_AFTER,
    FailureLog,
    check_answer,
    model_label,
    signature,
)
from agentstage.core.orchestrators.routing import routed_tools
from agentstage.errors import ModelError

# One worked example: a small model shown three copies a wrong one as often as the right one
# (measured with benchmarks/embedded_quality.py); the retrieval picks the closest.
EXAMPLES = 1
ACTION_MAX_TOKENS = 320


@dataclass
class _Loop:
    """One react run's moving parts."""

    messages: list[Message]
    pinned: set[int]
    failures: FailureLog
    required: list[str]
    quotes: list[str] = field(default_factory=list)
    seen: dict[str, str | None] = field(default_factory=dict)  # call signature → error, if it failed
    force_answer: bool = False
    greedy: bool = False


class ReactOrchestrator:
    template: ClassVar[str] = "react/agent-react.j2"

    async def run(self, ctx: AgentContext) -> AsyncIterator[EventDraft]:
        json_actions = not ctx.model.native_tools
        loop = self._start(ctx, json_actions)
        for steps_taken in range(ctx.limits.max_steps):
            step = Step(ctx, "llm", f"think {steps_taken + 1}")
            yield step.started()
            call = ModelCall(
                ctx,
                self._request(ctx, loop, json_actions),
                span_id=step.span_id,
                stream_text=not json_actions,
            )
            async for draft in call.run():
                yield draft
            assert call.response is not None
            try:
                actions = self._actions(ctx, call.response, json_actions)
            except ModelError as error:
                yield step.finished(ErrorInfo(code=error.code, message=error.message))
                self._note_failure(loop, call.response.message.content, error.message)
                continue
            if isinstance(actions, Answer):
                yield step.finished()
                text = self._answer(ctx, loop, actions, call.response)
                if json_actions:
                    ctx.partial_output += text
                    yield EventDraft.of(MessageDelta(call_id=call.call_id, text=text), step.span_id)
                ctx.output = text
                return
            repeat = self._repeat(loop, actions)
            if repeat is not None:
                yield step.finished(ErrorInfo(code="repeated_call", message=repeat))
                continue
            yield step.finished()
            loop.messages.append(
                Message.assistant(call.response.message.content, actions if not json_actions else None)
            )
            for tool_call in actions:
                async for draft in self._tool_step(ctx, loop, tool_call, json_actions):
                    yield draft
        failed = loop.failures.all_tools_failed()
        raise failed if failed is not None else ctx.limits.steps_exhausted(ctx.limits.max_steps)

    # setting up --------------------------------------------------------------------------------

    def _start(self, ctx: AgentContext, json_actions: bool) -> _Loop:
        required = routed_tools(ctx.input, ctx.tools) if len(ctx.tools) else []
        # A small model reads every token slowly and is distracted by tools it must not use.
        shown = [
            spec for spec in ctx.tools.specs() if not (json_actions and required) or spec.name in required
        ]
        system = ctx.prompts.render(self.template, tools=shown, json_actions=json_actions)
        messages = [Message.system(system)]
        question = with_hints(ctx.tools, ctx.input) if json_actions else ctx.input
        if json_actions:
            pool = [e for tool in ctx.tools for e in examples_of(tool) if not required or e.tool in required]
            chosen = nearest_examples(hinted(ctx.tools, pool), question, EXAMPLES)
            demo = self._demo(ctx, chosen)
            for example in chosen:
                messages += [Message.user(example.input), Message.assistant(example.action())]
                if demo is not None and example is demo[0]:
                    messages += [
                        Message.user(f"Observation from {example.tool}: {demo[1]}"),
                        Message.assistant(json.dumps({"answer": demo[1]}, ensure_ascii=False)),
                    ]
        messages += ctx.history
        pinned = {0, len(messages)}
        messages.append(Message.user(question))
        return _Loop(messages, pinned, FailureLog(model_label(ctx.model)), required if json_actions else [])

    @staticmethod
    def _demo(ctx: AgentContext, chosen: list[ToolExample]) -> tuple[ToolExample, str] | None:
        """One example shown to the end (its real result, then the answer quoting it), the one with
        the shortest result: every prompt token costs a small model's CPU time."""
        shown = []
        for example in chosen:
            result = example_result(ctx.tools.get(example.tool), example)
            if result is not None:
                shown.append((example, result))
        return min(shown, key=lambda pair: len(pair[1])) if shown else None

    def _request(self, ctx: AgentContext, loop: _Loop, json_actions: bool) -> ModelRequest:
        pinned = loop.pinned | {len(loop.messages) - 1}
        wanted = int(ctx.params.get("max_tokens", 512))
        if json_actions:
            wanted = min(wanted, ACTION_MAX_TOKENS)
        messages, room = fit_messages(ctx.model, loop.messages, pinned=pinned, max_tokens=wanted)
        params: dict[str, object] = {"max_tokens": room}
        if json_actions or loop.greedy:
            params["temperature"] = 0.0
        if not json_actions:
            return ModelRequest(messages=messages, tools=ctx.tools.specs(), params=params)
        answer: str | list[str] | None = "free"
        allowed = ctx.tools.names()
        if loop.quotes:
            answer = list(dict.fromkeys(reversed(loop.quotes)))
        elif loop.required:
            answer, allowed = None, loop.required
        if loop.force_answer and answer is not None:
            allowed = []
        grammar = action_grammar(ctx.tools, allowed=allowed, answer=answer)
        return ModelRequest(
            messages=messages, response_format=action_schema(ctx.tools), grammar=grammar, params=params
        )

    # judging the model's reply --------------------------------------------------------------------

    def _actions(
        self, ctx: AgentContext, response: ModelResponse, json_actions: bool
    ) -> Answer | list[ToolCall]:
        if not json_actions:
            return response.tool_calls or Answer(text=response.message.content)
        action = parse_action(response.message.content, ctx.tools)
        return action if isinstance(action, Answer) else [action]

    def _answer(self, ctx: AgentContext, loop: _Loop, answer: Answer, response: ModelResponse) -> str:
        failed = loop.failures.all_tools_failed()
        if failed is not None:
            raise failed
        return check_answer(answer.text, response.finish_reason, loop.failures.model_label)

    def _note_failure(self, loop: _Loop, reply: str, error: str) -> None:
        times = loop.failures.record(f"invalid {reply.strip()[:500]} {error}")
        if times >= STOP_AFTER:
            raise loop.failures.repeated("an invalid action", error, times)
        loop.messages.append(Message.assistant(reply))
        note = f"That was not a valid action: {error}. Reply with one valid JSON action."
        if times >= REPAIR_AFTER:
            loop.greedy = True
            note = loop.failures.repair_note("this action", error)
        loop.messages.append(Message.user(note))

    def _repeat(self, loop: _Loop, actions: list[ToolCall]) -> str | None:
        """A call already made: not run again. After a success it means the model is done."""
        for call in actions:
            key = signature(call)
            if key not in loop.seen:
                continue
            error = loop.seen[key]
            times = loop.failures.record(key)
            if times >= STOP_AFTER:
                raise loop.failures.repeated(f"calling {call.name}", error or "already answered", times)
            loop.greedy = True
            if error is None:
                loop.force_answer = True
                loop.messages.append(Message.user(f"You already have the result of {call.name}; answer now."))
                return f"{call.name} was already called with these arguments; its result is known"
            loop.messages.append(Message.user(loop.failures.repair_note(f"calling {call.name}", error)))
            return f"{call.name} was called again with arguments that already failed"
        return None

    async def _tool_step(
        self, ctx: AgentContext, loop: _Loop, call: ToolCall, json_actions: bool
    ) -> AsyncIterator[EventDraft]:
        step = Step(ctx, "tool", ctx.tools.qualified(call.name))
        yield step.started()
        run = ToolRun(ctx, call, span_id=step.span_id)
        async for draft in run.run():
            yield draft
        yield step.finished(run.outcome.error)
        error = run.outcome.error
        loop.failures.tool_result(call, error)
        loop.seen[signature(call)] = error.message if error is not None else None
        if error is None:
            loop.quotes.append(quote(ctx.tools.get(call.name), run.outcome.output))
        else:
            loop.failures.record(signature(call))
        if not json_actions:
            loop.messages.append(Message.tool(run.outcome.for_model(), tool_call_id=call.id, name=call.name))
        elif error is None:
            loop.messages.append(Message.user(f"Observation from {call.name}: {loop.quotes[-1]}"))
        else:
            loop.messages.append(Message.user(f"Observation from {call.name}: {run.outcome.for_model()}"))
