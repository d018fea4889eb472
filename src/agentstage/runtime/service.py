"""RunService: start, stream, status, cancel, wait and batch — the one place runs are scheduled.

Every door calls this class and nothing below it. A run's life is an append-only, gap-free event
log; the service stamps each event an orchestrator yields (``seq``, ``ts``, trace ids), keeps the
run record in step, and hands both to the group-commit writer. Cancellation follows the contract
in ARCHITECTURE.md: honoured in any non-terminal state (a queued run never starts), delivered to the
model stream and the running tool, idempotent, and refused with :class:`ConflictError` once the
run has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from uuid6 import uuid7

from agentstage.core.events import (
    ErrorInfo,
    EventDraft,
    Payload,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunQueued,
    utc_now,
)
from agentstage.core.model import Model
from agentstage.core.orchestrators import parse_mode
from agentstage.core.prompts import PromptLibrary
from agentstage.core.records import RunRecord
from agentstage.errors import AgentstageError, ConflictError, InvalidInputError, NotFoundError
from agentstage.runtime.catalog import ToolCatalog, ToolServerSpec
from agentstage.runtime.execution import RunExecution
from agentstage.runtime.live import LiveRun
from agentstage.runtime.recovery import LostRunSweeper
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.writer import EventWriter
from agentstage.settings import Settings
from agentstage.store.base import RunStore
from agentstage.types import RunStatus

ModelFactory = Callable[[str], Model]
log = logging.getLogger("agentstage.runtime")
STORE_POLL_SECONDS = 0.2
CANCEL_RETRY_SECONDS = 0.5


@dataclass
class BatchItem:
    """One line of a batch: its run, or the reason it could not start."""

    index: int
    input: str
    record: RunRecord | None = None
    error: dict[str, Any] | None = None

    def result(self) -> dict[str, Any]:
        if self.record is not None:
            return {"index": self.index, "input": self.input, **self.record.result()}
        return {"index": self.index, "input": self.input, "status": "rejected", "error": self.error}


class RunService:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        model_factory: ModelFactory,
        catalog: ToolCatalog,
        prompts: PromptLibrary | None = None,
    ):
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.prompts = prompts or PromptLibrary()
        self.model_factory = model_factory
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._live: dict[str, LiveRun] = {}
        self._slots = asyncio.Semaphore(settings.runtime.max_concurrent_runs)
        self._writer = EventWriter(store, self._published)
        self._sweeper = LostRunSweeper(store, self.worker_id, settings.runtime.worker_lost_after)
        self._heartbeat: asyncio.Task[None] | None = None
        self._opened = False

    # life cycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store (migrating it), fail runs whose process died, start the background tasks."""
        await self.store.open()
        await self._sweeper.sweep(at_startup=True)
        await self._connect_tool_servers()
        self._writer.start()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="agentstage-heartbeat")
        self._opened = True

    async def _connect_tool_servers(self) -> None:
        """Connect the configured MCP servers; one that fails is logged and skipped, not fatal."""
        for entry in self.settings.tools.mcp_servers:
            try:
                await self.catalog.connect(ToolServerSpec.model_validate(entry))
            except (AgentstageError, ValidationError) as error:
                log.warning("tool server %r not connected: %s", entry.get("name"), error)

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        for run_id in list(self._live):
            with contextlib.suppress(AgentstageError):
                await self.cancel(run_id, reason="the service is shutting down")
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self._writer.close()
        await self.catalog.close()
        await self.store.close()

    async def __aenter__(self) -> RunService:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # starting -----------------------------------------------------------------------------------

    async def start(self, request: RunRequest, *, gate: asyncio.Semaphore | None = None) -> RunRecord:
        """Validate, record the run as ``queued`` (durably) and schedule it; return its record.

        ``gate`` bounds how many runs sharing it execute at once (a batch's ``parallel``)."""
        text = self._validated_input(request.input)
        mode = parse_mode(request.mode or self.settings.default_mode.value)
        profile = request.profile or self.settings.default_profile
        self.settings.profile(profile)
        self.settings.limits_for(profile, request.options.limit_overrides())
        for name in request.options.tools or []:
            self.catalog.get(name)
        if request.conversation_id and await self.store.get_conversation(request.conversation_id) is None:
            raise NotFoundError(
                f"unknown conversation {request.conversation_id!r}", code="conversation_not_found"
            )
        now = utc_now()
        record = RunRecord(
            id=str(uuid7()),
            status=RunStatus.QUEUED,
            input=text,
            mode=mode.value,
            profile=profile,
            options=request.options.model_dump(exclude_defaults=True),
            conversation_id=request.conversation_id,
            correlation_id=request.correlation_id,
            created_at=now,
            worker_id=self.worker_id,
            heartbeat_at=now,
            trace_id=secrets.token_hex(16),
        )
        live = LiveRun(record=record, request=request, gate=gate)
        self._live[record.id] = live
        self._writer.add_run(record.model_copy())
        self.emit(
            live,
            EventDraft.of(
                RunQueued(
                    input=text,
                    mode=mode.value,
                    profile=profile,
                    options=record.options,
                    conversation_id=request.conversation_id,
                    correlation_id=request.correlation_id,
                )
            ),
        )
        await self._writer.flush()
        live.task = asyncio.create_task(self._execute(live), name=f"run-{record.id}")
        return record.model_copy()

    def _validated_input(self, text: str) -> str:
        if not text.strip():
            raise InvalidInputError(
                "the input is empty; give the agent a question or task", code="empty_input"
            )
        limit = self.settings.runtime.max_input_chars
        if len(text) > limit:
            raise InvalidInputError(
                f"the input has {len(text)} characters, over the limit of {limit}", code="input_too_long"
            )
        return text

    async def run(self, request: RunRequest) -> RunRecord:
        """Start a run and wait for its end."""
        record = await self.start(request)
        return await self.wait(record.id)

    # executing ------------------------------------------------------------------------------------

    async def _execute(self, live: LiveRun) -> None:
        live.scheduled = True
        try:
            if live.cancel_reason is not None:  # cancelled before this task first ran
                await self.finish_cancelled(live)
                return
            async with live.gate or contextlib.nullcontext(), self._slots:
                if live.cancel_reason is not None:
                    await self.finish_cancelled(live)
                    return
                await RunExecution(self, live).run()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if not live.record.status.terminal:
                await self.finish_cancelled(live)
        finally:
            live.finish()
            self._live.pop(live.record.id, None)

    def emit(self, live: LiveRun, draft: EventDraft) -> RunEvent:
        """Give a draft its place in the run's log and hand it to the writer."""
        event = RunEvent.model_construct(
            run_id=live.record.id,
            seq=live.next_seq,
            type=draft.type,
            ts=utc_now(),
            data=draft.data,
            trace_id=live.record.trace_id,
            span_id=draft.span_id,
        )
        live.next_seq += 1
        live.record.last_seq = event.seq
        self._writer.add_event(event)
        self._writer.update(live.record.id, last_seq=event.seq)
        return event

    def update(self, live: LiveRun, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(live.record, name, value)
        self._writer.update(live.record.id, **fields)

    async def finish(self, live: LiveRun, status: RunStatus, payload: Payload, **fields: Any) -> None:
        """Write the terminal event and the final record together, and wait until both are durable."""
        self.update(live, status=status, finished_at=utc_now(), **fields)
        self.emit(live, EventDraft.of(payload))
        await self._writer.flush()

    async def finish_cancelled(self, live: LiveRun) -> None:
        context = live.context
        partial = context.partial_output if context else ""
        usage = live.record.usage or {}
        reason = live.cancel_reason or "cancelled"
        payload = RunCancelled(reason=reason, partial_output=partial, usage=usage, cost=live.record.cost)
        await self.finish(
            live,
            RunStatus.CANCELLED,
            payload,
            output=partial or None,
            error_code="cancelled",
            error_message=reason,
        )

    async def finish_failed(self, live: LiveRun, error: ErrorInfo) -> None:
        payload = RunFailed(error=error, usage=live.record.usage, cost=live.record.cost)
        await self.finish(live, RunStatus.FAILED, payload, error_code=error.code, error_message=error.message)

    async def finish_completed(self, live: LiveRun, output: str, **fields: Any) -> None:
        payload = RunCompleted(output=output, usage=live.record.usage, cost=live.record.cost)
        await self.finish(live, RunStatus.COMPLETED, payload, output=output, **fields)

    def add_messages(self, messages: Sequence[Any]) -> None:
        self._writer.add_messages(list(messages))

    def _published(self, events: list[RunEvent]) -> None:
        """Hand each live run its newly durable events, one wake-up per run per commit."""
        by_run: dict[str, list[RunEvent]] = {}
        for event in events:
            by_run.setdefault(event.run_id, []).append(event)
        for run_id, run_events in by_run.items():
            live = self._live.get(run_id)
            if live is not None:
                live.publish(run_events)

    # reading --------------------------------------------------------------------------------------

    async def status(self, run_id: str) -> RunRecord:
        live = self._live.get(run_id)
        if live is not None:
            return live.record.model_copy()
        record = await self.store.get_run(run_id)
        if record is None:
            raise NotFoundError(f"unknown run {run_id!r}", code="run_not_found")
        return record

    async def wait(self, run_id: str) -> RunRecord:
        """Return the run's record once it has ended and its last event is durable."""
        live = self._live.get(run_id)
        if live is not None:
            await live.done.wait()
            return live.record.model_copy()
        while True:
            record = await self.status(run_id)
            if record.status.terminal:
                return record
            await asyncio.sleep(STORE_POLL_SECONDS)

    async def stream(self, run_id: str, after: int = 0) -> AsyncIterator[RunEvent]:
        """Every event after ``after``, in order, exactly once, until the terminal event.

        Works for live runs of this process, finished runs, and runs of other processes (polled)."""
        live = self._live.get(run_id)
        if live is not None:
            async for event in live.follow(after):
                yield event
            return
        record = await self.status(run_id)
        cursor = after
        while True:
            events = await self.store.events(run_id, after=cursor)
            for event in events:
                yield event
                cursor = event.seq
                if event.terminal:
                    return
            if not events:
                if record.status.terminal:
                    return
                await asyncio.sleep(STORE_POLL_SECONDS)
                record = await self.status(run_id)

    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> list[RunEvent]:
        await self.status(run_id)
        return await self.store.events(run_id, after=after, limit=limit)

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0
    ) -> list[RunRecord]:
        return await self.store.list_runs(status=status, limit=limit, offset=offset)

    async def count_runs(self, *, status: RunStatus | None = None) -> int:
        return await self.store.count_runs(status=status)

    # cancelling -----------------------------------------------------------------------------------

    async def cancel(self, run_id: str, reason: str = "cancelled by the user") -> RunRecord:
        """Ask a run to stop. Returns its record as it stands; raises ConflictError if it has ended."""
        live = self._live.get(run_id)
        if live is not None and not live.record.status.terminal:
            if live.cancel_reason is None:
                live.cancel_reason = reason
                if live.context is not None:
                    live.context.cancelled.set()
                self._interrupt(live)
            return live.record.model_copy()
        record = await self.status(run_id)
        if record.status.terminal:
            raise ConflictError(
                f"run {run_id!r} has already ended ({record.status.value}); it cannot be cancelled",
                code="run_finished",
                details={"run_status": record.status.value},
            )
        await self.store.request_cancel(run_id)
        return record

    def _interrupt(self, live: LiveRun) -> None:
        """Cancel the run's task, and again shortly after if a cancellation was swallowed on the way."""
        if live.record.status.terminal or not live.scheduled or live.task is None or live.task.done():
            return
        live.task.cancel()
        asyncio.get_running_loop().call_later(CANCEL_RETRY_SECONDS, self._interrupt, live)

    # batches --------------------------------------------------------------------------------------

    async def start_batch(self, requests: Sequence[RunRequest], parallel: int) -> list[BatchItem]:
        """Queue one run per request at once, at most ``parallel`` of them executing together.

        A request that cannot start is reported on its own item; it never stops the batch."""
        if parallel < 1:
            raise InvalidInputError(f"parallel must be at least 1, got {parallel!r}", code="invalid_parallel")
        gate = asyncio.Semaphore(parallel)
        items = []
        for index, request in enumerate(requests):
            item = BatchItem(index=index, input=request.input)
            try:
                item.record = await self.start(request, gate=gate)
            except AgentstageError as error:
                item.error = error.to_dict()
            items.append(item)
        return items

    async def batch(
        self,
        requests: Sequence[RunRequest],
        parallel: int = 4,
        on_result: Callable[[BatchItem], Awaitable[None] | None] | None = None,
    ) -> list[BatchItem]:
        """Run a batch to its end; results in input order, ``on_result`` called as each one ends."""
        items = await self.start_batch(requests, parallel)

        async def finish(item: BatchItem) -> None:
            if item.record is not None:
                item.record = await self.wait(item.record.id)
            if on_result is not None:
                outcome = on_result(item)
                if outcome is not None:
                    await outcome

        await asyncio.gather(*(finish(item) for item in items))
        return items

    # background -----------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.runtime.heartbeat_interval
        ticks = 0
        while True:
            await asyncio.sleep(interval)
            ticks += 1
            try:
                await self._beat()
                if ticks % 5 == 0:
                    await self._sweeper.sweep(at_startup=False)
            except Exception:  # the store may be briefly unavailable; the next beat retries
                continue

    async def _beat(self) -> None:
        active = [run_id for run_id, live in self._live.items() if not live.record.status.terminal]
        if not active:
            return
        await self.store.heartbeat(active, utc_now())
        for run_id in await self.store.cancel_requested(active):
            with contextlib.suppress(AgentstageError):
                await self.cancel(run_id, reason="cancelled by request from another process")
