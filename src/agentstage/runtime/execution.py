"""One run's execution: prepare the agent, drive its orchestrator, record how it ended."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any

from agentstage.core.events import ErrorInfo, EventDraft, RunStarted, utc_now
from agentstage.core.limits import RunLimits
from agentstage.core.messages import Message, Usage
from agentstage.core.orchestrators import (
    AgentContext,
    Orchestrator,
    choose_mode,
    orchestrator_for,
)
from agentstage.core.records import MessageRecord
from agentstage.errors import AgentstageError
from agentstage.observability.masking import mask, masked_environment
from agentstage.runtime.catalog import schema_hash
from agentstage.runtime.live import LiveRun
from agentstage.runtime.pricing import call_cost
from agentstage.runtime.snapshot import SNAPSHOT_SCHEMA_VERSION, code_version, snapshot_hash
from agentstage.types import Mode, RunStatus

if TYPE_CHECKING:
    from agentstage.runtime.service import RunService


class RunExecution:
    def __init__(self, service: RunService, live: LiveRun):
        self.service = service
        self.live = live
        self.settings = service.settings
        self.started = time.perf_counter()
        self.counts = {"model_calls": 0, "tool_calls": 0, "tool_errors": 0, "steps": 0}
        self.history: list[Message] = []
        self.snapshot: dict[str, Any] = {}

    async def run(self) -> None:
        service, live = self.service, self.live
        try:
            context, orchestrator = await self._prepare()
        except AgentstageError as error:
            await service.finish_failed(live, ErrorInfo(code=error.code, message=error.message))
            return
        except Exception as crash:  # a bug in preparation must still leave a failed run
            await self._fail(ErrorInfo(code="internal_error", message=f"{type(crash).__name__}: {crash}"))
            return
        deadline = asyncio.timeout(context.limits.max_duration)
        try:
            async with deadline:
                async for draft in orchestrator.run(context):
                    self._observe(draft)
                    service.emit(live, draft)
                    if live.cancel_reason is not None:
                        # The cancel may have been swallowed below us (asyncio.wait_for can lose
                        # one when its inner future finishes at the same moment): honour it here.
                        raise asyncio.CancelledError
        except asyncio.CancelledError:
            if live.cancel_reason is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._complete_snapshot(RunStatus.CANCELLED, context.partial_output)
            await service.finish_cancelled(live)
        except TimeoutError:
            seconds = context.limits.max_duration
            if deadline.expired():
                info = ErrorInfo(
                    code="max_duration", message=f"the run took longer than max_duration={seconds:g}s"
                )
            else:
                info = ErrorInfo(code="timeout", message="an operation of the run timed out")
            await self._fail(info)
        except AgentstageError as failure:
            await self._fail(ErrorInfo(code=failure.code, message=failure.message))
        except Exception as crash:  # a bug must still leave a failed run with its events
            await self._fail(ErrorInfo(code="internal_error", message=f"{type(crash).__name__}: {crash}"))
        else:
            output = context.output or ""
            self._complete_snapshot(RunStatus.COMPLETED, output)
            self._remember_conversation(output)
            await service.finish_completed(live, output)

    async def _fail(self, error: ErrorInfo) -> None:
        self._complete_snapshot(RunStatus.FAILED, None)
        await self.service.finish_failed(self.live, error)

    async def _prepare(self) -> tuple[AgentContext, Orchestrator]:
        service, live, record = self.service, self.live, self.live.record
        options = live.request.options
        if record.conversation_id:
            stored = await service.store.messages(record.conversation_id)
            self.history = [Message.model_validate({"role": m.role, "content": m.content}) for m in stored]
        toolset = service.catalog.toolset(options.tools)
        mode = Mode(record.mode)
        if mode is Mode.AUTO:
            mode, reason = choose_mode(record.input, toolset)
        else:
            reason = "requested"
        orchestrator = orchestrator_for(mode)
        limits = self.settings.limits_for(record.profile, options.limit_overrides())
        profile = self.settings.profile(record.profile)
        model = service.model_factory(record.profile)
        context = AgentContext(
            run_id=record.id,
            input=record.input,
            model=model,
            tools=toolset,
            prompts=service.prompts,
            limits=limits,
            history=self.history,
            params={**profile.params, **options.params},
            deadline=time.monotonic() + limits.max_duration,
        )
        if live.cancel_reason is not None:
            context.cancelled.set()
        live.context = context
        self.snapshot = self._start_snapshot(mode, reason, orchestrator, limits, context)
        start_hash = snapshot_hash(self.snapshot)
        service.update(
            live,
            status=RunStatus.RUNNING,
            started_at=utc_now(),
            resolved_mode=mode.value,
            snapshot=dict(self.snapshot),
            snapshot_hash=start_hash,
        )
        self.snapshot["started_at"] = record.started_at.isoformat() if record.started_at else None
        started = RunStarted(
            mode=mode.value,
            mode_reason=reason,
            profile=record.profile,
            prompt_template=orchestrator.template,
            snapshot_hash=start_hash,
            trace_id=record.trace_id,
        )
        service.emit(live, EventDraft.of(started))
        return context, orchestrator

    def _start_snapshot(
        self, mode: Mode, reason: str, orchestrator: Orchestrator, limits: RunLimits, context: AgentContext
    ) -> dict[str, Any]:
        record, settings = self.live.record, self.settings
        profile = settings.profile(record.profile)
        chain = []
        for entry in profile.chain:
            provider = settings.providers[entry.provider]
            chain.append(
                {
                    "provider": entry.provider,
                    "type": provider.type,
                    "model": entry.model or context.model.model_name,
                    "params": entry.params,
                    "options": mask(provider.options()),
                }
            )
        return {
            "schema_version": SNAPSHOT_SCHEMA_VERSION,
            "run_id": record.id,
            "created_at": record.created_at.isoformat(),
            "started_at": None,
            "finished_at": None,
            "mode": {"requested": record.mode, "resolved": mode.value, "reason": reason},
            "profile": {
                "name": record.profile,
                "chain": chain,
                "params": context.params,
                "limits": limits.model_dump(),
            },
            "tools": [{"id": f"{t.name}:{t.version}", "schema_hash": schema_hash(t)} for t in context.tools],
            "prompt": {
                "template": orchestrator.template,
                "hash": self.service.prompts.source_hash(orchestrator.template),
            },
            "options": record.options,
            "environment": masked_environment(os.environ, settings.environment_allowlist),
            "input": record.input,
            "history_messages": len(self.history),
            "conversation_id": record.conversation_id,
            "output": None,
            "status": None,
            "metrics": None,
            "code": code_version(),
        }

    def _observe(self, draft: EventDraft) -> None:
        """Keep the record's usage, cost and counters in step with what the orchestrator reports."""
        if draft.type == "model.response":
            data = draft.data
            self.counts["model_calls"] += 1
            usage = Usage.model_validate(data["usage"])
            total = Usage.model_validate(self.live.record.usage) + usage
            cost = self.live.record.cost + call_cost(
                self.settings.pricing, data["provider"], data["model"], data["usage"]
            )
            self.service.update(self.live, usage=total.as_dict(), cost=round(cost, 10))
        elif draft.type == "tool.result":
            self.counts["tool_calls"] += 1
            if draft.data.get("error"):
                self.counts["tool_errors"] += 1
        elif draft.type == "step.finished":
            self.counts["steps"] += 1

    def _complete_snapshot(self, status: RunStatus, output: str | None) -> None:
        if not self.snapshot:
            return
        record = self.live.record
        self.snapshot.update(
            finished_at=utc_now().isoformat(),
            status=status.value,
            output=output,
            metrics={
                "usage": record.usage,
                "cost": record.cost,
                "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
                **self.counts,
            },
        )
        self.service.update(
            self.live, snapshot=dict(self.snapshot), snapshot_hash=snapshot_hash(self.snapshot)
        )

    def _remember_conversation(self, output: str) -> None:
        record = self.live.record
        if not record.conversation_id:
            return
        now = utc_now()
        position = len(self.history)
        self.service.add_messages(
            [
                MessageRecord(
                    conversation_id=record.conversation_id,
                    position=position,
                    role="user",
                    content=record.input,
                    run_id=record.id,
                    created_at=now,
                ),
                MessageRecord(
                    conversation_id=record.conversation_id,
                    position=position + 1,
                    role="assistant",
                    content=output,
                    run_id=record.id,
                    created_at=now,
                ),
            ]
        )
