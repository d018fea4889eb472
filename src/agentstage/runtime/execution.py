"""One run's execution: prepare the agent, drive its orchestrator, record how it ended.

It writes only through the run's :class:`RunRecorder` and reads only what
:class:`ExecutionDeps` gives it, so no door and no other part of the service can write a run's
events. Cancellation is not handled here: the supervisor cancels this work and writes the
``cancelled`` ending itself (see :mod:`agentstage.runtime.service`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from agentstage.core.events import (
    ErrorInfo,
    EventDraft,
    ModelResponded,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunStarted,
    StepFinished,
    ToolResulted,
    utc_now,
)
from agentstage.core.limits import RunLimits
from agentstage.core.messages import Message
from agentstage.core.model import Model
from agentstage.core.orchestrators import AgentContext, Orchestrator, choose_mode, orchestrator_for
from agentstage.core.prompts import PromptLibrary
from agentstage.core.records import MessageRecord
from agentstage.errors import AgentstageError
from agentstage.runtime.catalog import ToolCatalog
from agentstage.runtime.pricing import call_cost
from agentstage.runtime.recorder import RunRecorder
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.snapshot import configuration, snapshot_hash
from agentstage.settings import Settings
from agentstage.types import Mode, RunStatus

ModelFactory = Callable[[str], Model]


class ConfigSnapshots:
    """Configuration snapshots already made, by what they depend on: runs of one profile with the
    same options and tools share one (made, hashed and stored once)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._made: dict[tuple[Any, ...], tuple[Settings, Any, str, dict[str, Any]]] = {}

    def get(
        self, key: tuple[Any, ...], settings: Settings, toolset: Any, make: Callable[[], dict[str, Any]]
    ) -> tuple[str, dict[str, Any]]:
        found = self._made.get(key)
        if found is not None and found[0] is settings and found[1] is toolset:
            return found[2], found[3]
        config = make()
        digest = snapshot_hash(config)
        if len(self._made) >= self.size:
            self._made.clear()
        self._made[key] = (settings, toolset, digest, config)
        return digest, config


class Limits:
    """A run's limits by profile and overrides, validated once per configuration (every run of
    a profile asks twice: when it is admitted and when it starts)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._made: dict[tuple[Any, ...], tuple[Settings, RunLimits]] = {}

    def get(self, settings: Settings, profile: str, overrides: dict[str, Any]) -> RunLimits:
        key = (id(settings), profile, *sorted(overrides.items()))
        found = self._made.get(key)
        if found is not None and found[0] is settings:
            return found[1]
        limits = settings.limits_for(profile, overrides)
        if len(self._made) >= self.size:
            self._made.clear()
        self._made[key] = (settings, limits)
        return limits


LIMITS = Limits()


class RunWatch(Protocol):
    """Holds a run to an expectation while it executes (a replay: the run it replays)."""

    def history(self) -> list[Message] | None:
        """The conversation the run continues, when it is given instead of read from the store."""
        ...

    def seen(self, event: RunEvent) -> None:
        """Each event of the orchestrator as recorded; an AgentstageError raised here fails the run."""
        ...

    def ending(self, output: str | None, error: ErrorInfo | None) -> ErrorInfo | None:
        """Just before the run's own end is written; an error returned ends the run failed with it."""
        ...


@dataclass(frozen=True)
class ExecutionDeps:
    """What a run needs from the service, and nothing more."""

    settings: Settings
    catalog: ToolCatalog
    prompts: PromptLibrary
    model_factory: ModelFactory
    history: Callable[[str], Awaitable[list[MessageRecord]]]
    snapshots: ConfigSnapshots
    watch: RunWatch | None = None


class RunExecution:
    def __init__(
        self, recorder: RunRecorder, request: RunRequest, deps: ExecutionDeps, cancelled: asyncio.Event
    ):
        self.recorder = recorder
        self.record = recorder.record
        self.request = request
        self.deps = deps
        self.cancelled = cancelled
        self.started = time.perf_counter()
        self.counts = {"model_calls": 0, "tool_calls": 0, "tool_errors": 0, "steps": 0}
        self.history: list[Message] = []
        self.context: AgentContext | None = None

    @property
    def partial_output(self) -> str:
        return self.context.partial_output if self.context is not None else ""

    async def run(self) -> None:
        """Execute the run to its end and record that end; cancellation propagates to the caller."""
        try:
            context, orchestrator = await self._prepare()
        except AgentstageError as error:
            self._fail(ErrorInfo(code=error.code, message=error.message))
            return
        except Exception as crash:  # a bug in preparation must still leave a failed run
            self._fail(ErrorInfo(code="internal_error", message=f"{type(crash).__name__}: {crash}"))
            return
        deadline = asyncio.timeout(context.limits.max_duration)
        try:
            async with deadline, contextlib.aclosing(_generator(orchestrator.run(context))) as drafts:
                async for draft in drafts:
                    self._observe(draft)
                    event = self.recorder.emit(draft)
                    if event is not None and self.deps.watch is not None:
                        self.deps.watch.seen(event)
                    if self.cancelled.is_set():  # stopped: no further step; the supervisor ends the run
                        self._measure()
                        return
        except asyncio.CancelledError:
            self._measure()
            raise
        except TimeoutError:
            if deadline.expired():
                seconds = context.limits.max_duration
                info = ErrorInfo(
                    code="max_duration", message=f"the run took longer than max_duration={seconds:g}s"
                )
            else:
                info = ErrorInfo(code="timeout", message="an operation of the run timed out")
            self._fail(info)
        except AgentstageError as failure:
            self._fail(ErrorInfo(code=failure.code, message=failure.message))
        except Exception as crash:  # a bug must still leave a failed run with its events
            self._fail(ErrorInfo(code="internal_error", message=f"{type(crash).__name__}: {crash}"))
        else:
            self._complete(context.output or "")

    # ending -----------------------------------------------------------------------------------------

    def _complete(self, output: str) -> None:
        self._measure()
        if self.cancelled.is_set():  # a stop that came first wins; the supervisor writes it
            return
        verdict = self.deps.watch.ending(output, None) if self.deps.watch is not None else None
        if verdict is not None:
            self._fail(verdict)
            return
        if self.record.conversation_id:
            self.recorder.add_turn(
                self.record.conversation_id, [("user", self.record.input), ("assistant", output)]
            )
        payload = RunCompleted(output=output, usage=self.record.usage, cost=self.record.cost)
        self.recorder.finish(payload, output=output)

    def _fail(self, error: ErrorInfo) -> None:
        self._measure()
        if self.cancelled.is_set():
            return
        if self.deps.watch is not None:
            error = self.deps.watch.ending(None, error) or error
        payload = RunFailed(error=error, usage=self.record.usage, cost=self.record.cost)
        self.recorder.finish(payload, error_code=error.code, error_message=error.message)

    def _measure(self) -> None:
        self.record.metrics = {
            **self.counts,
            "history_messages": len(self.history),
            "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
        }

    # preparing ----------------------------------------------------------------------------------

    async def _prepare(self) -> tuple[AgentContext, Orchestrator]:
        record, deps, options = self.record, self.deps, self.request.options
        given = deps.watch.history() if deps.watch is not None else None
        if given is not None:
            self.history = given
        elif record.conversation_id:
            stored = await deps.history(record.conversation_id)
            self.history = [Message.model_validate({"role": m.role, "content": m.content}) for m in stored]
        toolset = deps.catalog.toolset(options.tools)
        mode = Mode(record.mode)
        if mode is Mode.AUTO:
            mode, reason = choose_mode(record.input, toolset)
        else:
            reason = "requested"
        orchestrator = orchestrator_for(mode)
        limits = LIMITS.get(deps.settings, record.profile, options.limit_overrides())
        profile = deps.settings.profile(record.profile)
        model = deps.model_factory(record.profile)
        context = AgentContext(
            run_id=record.id,
            input=record.input,
            model=model,
            tools=toolset,
            prompts=deps.prompts,
            limits=limits,
            history=self.history,
            params={**profile.params, **options.params},
            cancelled=self.cancelled,
            deadline=time.monotonic() + limits.max_duration,
        )
        self.context = context
        key = (id(deps.settings), record.profile, orchestrator.template, context.model.model_name,
               json.dumps(record.options, sort_keys=True, default=str), id(toolset))  # fmt: skip
        digest, config = deps.snapshots.get(
            key,
            deps.settings,
            toolset,
            lambda: configuration(
                deps.settings, record.profile, context, orchestrator.template, limits, deps.prompts
            ),
        )
        self.recorder.keep_snapshot(digest, config)
        self.recorder.update(
            status=RunStatus.RUNNING, started_at=utc_now(), resolved_mode=mode.value, snapshot_hash=digest
        )
        started = RunStarted(
            mode=mode.value,
            mode_reason=reason,
            profile=record.profile,
            prompt_template=orchestrator.template,
            snapshot_hash=digest,
            trace_id=record.trace_id,
        )
        self.recorder.emit(EventDraft(started))
        return context, orchestrator

    # observing ----------------------------------------------------------------------------------------

    def _observe(self, draft: EventDraft) -> None:
        """Keep the record's usage, cost and counters in step with what the orchestrator reports."""
        match draft.payload:
            case ModelResponded(provider=provider, model=model, usage=usage):
                self.counts["model_calls"] += 1
                record = self.record
                assert self.context is not None
                record.usage = self.context.usage.as_dict()
                cost = call_cost(self.deps.settings.pricing, provider, model, usage.as_dict())
                record.cost = round(record.cost + cost, 10)
            case ToolResulted(error=error):
                self.counts["tool_calls"] += 1
                if error is not None:
                    self.counts["tool_errors"] += 1
            case StepFinished():
                self.counts["steps"] += 1
            case _:
                pass


def _generator(drafts: AsyncIterator[EventDraft]) -> AsyncGenerator[EventDraft, None]:
    """Orchestrators are async generators; closing one promptly runs its cleanup (open streams)."""
    return cast(AsyncGenerator[EventDraft, None], drafts)
