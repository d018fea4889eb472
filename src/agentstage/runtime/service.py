"""RunService: start, stream, status, cancel, wait and batch — the one place runs are scheduled.

Every door calls this class and nothing below it. A run's writes belong to its
:class:`~agentstage.runtime.recorder.RunRecorder`; its execution sees only the recorder and an
:class:`~agentstage.runtime.execution.ExecutionDeps`. This class admits runs (a batch's gate, one
run at a time per conversation, the concurrency limit), supervises each one, and is the only place
that acts on a cancellation: it cancels the run's work, waits a moment for it to wind down (a tool
that swallows the cancellation is left behind), and writes the ending. Cancellation follows the
contract in ARCHITECTURE.md: honoured in any non-terminal state (a queued run never starts),
idempotent, and refused with :class:`ConflictError` once the run has finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from uuid6 import uuid7

from agentstage.core import strict_json
from agentstage.core.events import (
    ErrorInfo,
    RunCancelled,
    RunEvent,
    RunFailed,
    RunQueued,
    RunStarted,
    TerminalPayload,
    utc_now,
)
from agentstage.core.orchestrators import parse_mode
from agentstage.core.prompts import PromptLibrary
from agentstage.core.records import MessageRecord, RunRecord
from agentstage.core.tasks import stop_task
from agentstage.errors import (
    AgentstageError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    TooManyRequestsError,
)
from agentstage.runtime import observe
from agentstage.runtime.catalog import ToolCatalog
from agentstage.runtime.collector import tune_for_runs
from agentstage.runtime.distribution import ConfigFeed, EventBus, RunQueue, Sweeper, TenantBusy
from agentstage.runtime.execution import LIMITS, ConfigSnapshots, ExecutionDeps, ModelFactory, RunExecution
from agentstage.runtime.live import LiveRun
from agentstage.runtime.recorder import RunRecorder
from agentstage.runtime.recovery import LostRunSweeper
from agentstage.runtime.replay import ReplayParts, RunPlan, Snapshots
from agentstage.runtime.requests import RunOptions, RunRequest
from agentstage.runtime.sinks import EventSink
from agentstage.runtime.snapshot import assemble
from agentstage.runtime.writer import EventWriter
from agentstage.settings import Settings
from agentstage.store.base import RunStore
from agentstage.types import RunStatus

__all__ = ["BatchItem", "ModelFactory", "RunService"]

log = logging.getLogger("agentstage.runtime")
STORE_POLL_SECONDS = 0.2
BUS_WAIT_SECONDS = 1.0
REPAIR_INTERVAL = 0.25
SWEEP_EVERY_BEATS = 5

Lock = asyncio.Semaphore | asyncio.Lock
T = TypeVar("T")


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


class _Followers:
    """The first event sink: hands each live run of this process its newly durable events."""

    def __init__(self, live: dict[str, LiveRun]):
        self._live = live

    def deliver(self, events: Sequence[RunEvent]) -> None:
        start = 0
        for index in range(1, len(events) + 1):
            if index == len(events) or events[index].run_id != events[start].run_id:
                live = self._live.get(events[start].run_id)
                if live is not None:
                    live.publish(events[start:index])
                start = index


class RunService:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        model_factory: ModelFactory,
        catalog: ToolCatalog,
        prompts: PromptLibrary | None = None,
        *,
        queue: RunQueue | None = None,
        bus: EventBus | None = None,
        sweeper: Sweeper | None = None,
        replay_parts: ReplayParts | None = None,
        config_feed: ConfigFeed | None = None,
    ):
        """``queue``/``bus``: the scale-out mode (see runtime/distribution.py). With a queue, runs
        are recorded here and executed by whichever process claims them (:meth:`execute_queued`);
        with a bus, this process publishes its committed events and streams other processes' runs
        from it; with a config feed, configuration changes made through any process reach this
        one (see runtime/config_view.py)."""
        self.settings = settings
        self.config_feed = config_feed
        self.queue = queue
        self.bus = bus
        self.store = store
        self.catalog = catalog
        self.prompts = prompts or PromptLibrary()
        self.model_factory = model_factory
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._live: dict[str, LiveRun] = {}
        self._slots = asyncio.Semaphore(settings.runtime.max_concurrent_runs)
        self._conversations: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, runs holding or waiting
        self._writer = EventWriter(
            store,
            sinks=[_Followers(self._live)],
            on_lost=self._lost,
            write_timeout=settings.store.write_timeout,
        )
        self._sweeper: Sweeper = sweeper or LostRunSweeper(
            store, self.worker_id, settings.runtime.worker_lost_after
        )
        self._tenants: dict[str, asyncio.Semaphore] = {}
        if bus is not None:
            self._writer.add_sink(bus.publisher())
        self._repairs: dict[str, tuple[RunRecorder, RunFailed, dict[str, Any]]] = {}
        self._abandoned: set[asyncio.Task[None]] = set()
        self._snapshots = ConfigSnapshots()
        self._heartbeat: asyncio.Task[None] | None = None
        self._repairer: asyncio.Task[None] | None = None
        self._repairs_waiting = asyncio.Event()
        self._opened = False
        self._plans: dict[str, RunPlan] = {}  # runs that replay another: their own configuration
        self.snapshots = Snapshots(self, replay_parts)
        self._closing_sinks: list[Any] = []  # sinks with aclose(): they finish before the store closes

    # life cycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store (migrating it), fail runs whose process died, start the background tasks."""
        await self.store.open()
        if self.bus is not None:
            await self.bus.open()
        if self.queue is not None:
            await self.queue.open()
        await self._sweeper.sweep(at_startup=True)
        await self.catalog.sync(self.settings.tools.mcp_servers)
        if self.config_feed is not None:
            await self.config_feed.open()  # the changes other processes made, now and to come
        self._writer.start()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="agentstage-heartbeat")
        self._repairer = asyncio.create_task(self._repair_loop(), name="agentstage-repairs")
        self._opened = True
        tune_for_runs()

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        for live in list(self._live.values()):
            live.control.cancel("the service is shutting down")
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in (self._heartbeat, self._repairer):
            if task is not None:
                await stop_task(task)
        await self._repair()
        for task in self._abandoned:
            task.cancel()
        await self._writer.close()
        for sink in self._closing_sinks:
            with contextlib.suppress(Exception):
                await sink.aclose()
        if self.config_feed is not None:
            await self.config_feed.close()
        await self.catalog.close()
        if self.queue is not None:
            await self.queue.close()
        if self.bus is not None:
            await self.bus.close()
        await self.store.close()

    async def __aenter__(self) -> RunService:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def add_sink(self, sink: EventSink) -> None:
        """Subscribe to every committed event of this process's runs (after live followers). A sink
        with an ``aclose()`` coroutine is closed when the service closes, after the last events
        and before the store (so it can still write what it holds)."""
        self._writer.add_sink(sink)
        if callable(getattr(sink, "aclose", None)):
            self._closing_sinks.append(sink)

    # starting -----------------------------------------------------------------------------------

    async def start(
        self, request: RunRequest, *, gate: asyncio.Semaphore | None = None, plan: RunPlan | None = None
    ) -> RunRecord:
        """Validate, record the run as ``queued`` (durably) and schedule it; return its record.

        ``gate`` bounds how many runs sharing it execute at once (a batch's ``parallel``); a
        ``plan`` (a replay or re-run of another run) brings the run's own settings, model and tools."""
        text = self._validated_input(request.input)
        settings = plan.settings if plan is not None else self.settings
        mode = parse_mode(request.mode or settings.default_mode.value)
        profile = request.profile or settings.default_profile
        settings.profile(profile)
        LIMITS.get(settings, profile, request.options.limit_overrides())
        if plan is None:
            check = getattr(self.model_factory, "check", None)  # a model that cannot load: refuse now
            if check is not None:
                check(profile)
        for name in request.options.tools or []:
            (plan.catalog if plan is not None else self.catalog).get(name)
        conversation = (
            await self.store.get_conversation(request.conversation_id) if request.conversation_id else None
        )
        if request.conversation_id and (conversation is None or conversation.tenant != request.tenant):
            raise NotFoundError(
                f"unknown conversation {request.conversation_id!r}", code="conversation_not_found"
            )
        self._writer.health.require()
        run_id = str(uuid7())
        await self._admit_tenant(request.tenant, run_id)
        now = utc_now()
        origin = observe.origin(request.traceparent)
        record = RunRecord(
            id=run_id,
            tenant=request.tenant,
            status=RunStatus.QUEUED,
            input=text,
            mode=mode.value,
            profile=profile,
            options=request.options.model_dump(exclude_defaults=True),
            conversation_id=request.conversation_id,
            correlation_id=request.correlation_id,
            created_at=now,
            worker_id=None if self.queue is not None else self.worker_id,
            heartbeat_at=now,
            trace_id=origin.trace_id,
            replay_of=plan.replay_of if plan is not None else None,
        )
        recorder = RunRecorder(record, self._writer, max_event_bytes=self.settings.runtime.max_event_bytes)
        live = LiveRun(recorder=recorder, request=request, gate=gate)
        self._live[record.id] = live
        if plan is not None:
            self._plans[record.id] = plan.bind(live.control)
        recorder.begin(
            RunQueued(
                input=text,
                mode=mode.value,
                profile=profile,
                options=record.options,
                conversation_id=request.conversation_id,
                correlation_id=request.correlation_id,
                door=origin.door,
                parent_span_id=origin.parent_span_id,
            )
        )
        try:
            await recorder.durable()
        except StoreError:
            self._live.pop(record.id, None)
            self._plans.pop(record.id, None)
            raise
        if self.queue is not None:
            return await self._hand_over(live)
        live.task = asyncio.create_task(self._execute(live), name=f"run-{record.id}")
        return record.model_copy()

    async def _hand_over(self, live: LiveRun) -> RunRecord:
        """Give a durably queued run to the workers; if the queue cannot take it, it fails here."""
        self._live.pop(live.record.id, None)
        try:
            await self.queue.enqueue(live.record.model_copy())  # type: ignore[union-attr]
        except Exception as error:
            log.error("run %s could not be queued: %s: %s", live.record.id, type(error).__name__, error)
            info = ErrorInfo(code="queue_unavailable", message=f"the run could not be queued: {error}")
            failed = RunFailed(error=info, usage=live.record.usage, cost=live.record.cost)
            live.recorder.finish(failed, error_code=info.code, error_message=info.message)
            with contextlib.suppress(StoreError):
                await live.recorder.durable()
        return live.record.model_copy()

    async def _admit_tenant(self, tenant: str, run_id: str) -> None:
        """A tenant over its concurrent-run limit is refused here when the config says 'reject'
        (429 with Retry-After); otherwise its runs wait their turn (see :meth:`_admitted`). The
        store counts and admits in one step, so concurrent admissions on any processes cannot
        both take the last slot."""
        runtime = self.settings.runtime
        limit = runtime.tenant_limit(tenant)
        if limit is None or runtime.tenant_overflow != "reject":
            return
        active = await self.store.admit_run(run_id, tenant, limit, utc_now())
        if active is not None:
            raise TooManyRequestsError(
                f"tenant {tenant!r} already has {active} runs queued or running (its limit is {limit}); "
                "try again when one has finished",
                retry_after=1.0,
                code="tenant_limit",
            )

    def _validated_input(self, text: str) -> str:
        if not text.strip():
            raise InvalidInputError(
                "the input is empty; give the agent a question or task", code="empty_input"
            )
        nul = text.find("\x00")
        if nul >= 0:  # a prompt with NUL in it is a client bug (a C string, pasted bytes), not a question
            raise InvalidInputError(
                f"the input contains a NUL character (U+0000) at position {nul}; remove it",
                code="input_has_nul",
            )
        odd = strict_json.unpaired_surrogate_in(text)
        if odd is not None:  # undecodable bytes or half an escaped pair: UTF-8 cannot store it
            raise InvalidInputError(
                f"the input holds an unpaired surrogate (\\u{ord(odd.group()):04x}) at position "
                f"{odd.start()}, which is not Unicode text; send the text as UTF-8",
                code="input_not_unicode",
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
        try:
            async with self._admitted(live) as admitted:
                if admitted:
                    await self._supervise(live)
                await self._settle(live)
        except Exception:  # never expected: the run is left for repair, the service goes on
            log.exception("run %s: its supervisor failed", live.record.id)
        finally:
            live.finish()
            self._live.pop(live.record.id, None)
            self._writer.unfence(live.record.id)
            self._plans.pop(live.record.id, None)

    @contextlib.asynccontextmanager
    async def _admitted(self, live: LiveRun) -> AsyncIterator[bool]:
        """Hold the run's turn: its batch's gate, its conversation (one run at a time, in order),
        and a slot. Yields False if the run was stopped while it waited; it then never starts."""
        locks: list[Lock] = [lock for lock in (live.gate,) if lock is not None]
        conversation_id = live.record.conversation_id
        if conversation_id:
            turn, users = self._conversations.get(conversation_id, (asyncio.Lock(), 0))
            self._conversations[conversation_id] = (turn, users + 1)
            locks.append(turn)
        tenant_limit = self.settings.runtime.tenant_limit(live.record.tenant)
        if tenant_limit is not None and live.recorder.fence is None:  # claimed runs: the claim counts
            gate = self._tenants.setdefault(live.record.tenant, asyncio.Semaphore(tenant_limit))
            locks.append(gate)
        locks.append(self._slots)
        admitted = True
        try:
            async with contextlib.AsyncExitStack() as held:
                for lock in locks:
                    if not await _acquire_unless(lock, live.control.signal):
                        admitted = False
                        break
                    held.callback(lock.release)
                yield admitted
        finally:
            if conversation_id:
                turn, users = self._conversations[conversation_id]
                if users > 1:
                    self._conversations[conversation_id] = (turn, users - 1)
                else:
                    del self._conversations[conversation_id]

    async def _supervise(self, live: LiveRun) -> None:
        """Run the execution until it ends or the run is stopped; then stop it, within a grace."""
        deps = self._dependencies(self._plans.get(live.record.id))
        execution = RunExecution(live.recorder, live.request, deps, live.control.signal)
        work = asyncio.create_task(execution.run(), name=f"run-work-{live.record.id}")
        stop = asyncio.create_task(live.control.signal.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
                await asyncio.wait({work}, timeout=self.settings.runtime.cancel_grace)
        finally:
            stop.cancel()
        live.partial_output = execution.partial_output
        if not work.done():
            log.warning(
                "run %s: its work did not stop within %.1fs of being stopped (a tool ignored the "
                "cancellation); the run ends now and the work is left behind",
                live.record.id,
                self.settings.runtime.cancel_grace,
            )
            self._abandoned.add(work)
            work.add_done_callback(self._forget)
        elif not work.cancelled() and work.exception() is not None:
            log.error("run %s: its execution raised", live.record.id, exc_info=work.exception())

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()

    async def _settle(self, live: LiveRun) -> None:
        """Make sure the run has an ending and that it is durable; if the store lost it, write a
        ``failed`` ending naming why; if even that cannot be stored, keep retrying it."""
        recorder = live.recorder
        if recorder.lost is not None and recorder.lost.code == "run_fenced":
            self._fenced(live, recorder.lost)
            return
        if recorder.terminal is None:
            payload, fields = self._ending(live)
            recorder.finish(payload, **fields)
        try:
            await recorder.durable()
            return
        except StoreError as lost:
            if lost.code == "run_fenced":
                self._fenced(live, lost)
                return
            failed, fields = self._store_failure(live, lost)
            recorder.finish(failed, **fields)
        try:
            await recorder.durable()
        except StoreError as again:
            live.failure = again
            self._repairs[live.record.id] = (recorder, *self._store_failure(live, again))
            self._repairs_waiting.set()
            log.error(
                "run %s ended but its end could not be stored (%s); it is retried in the background",
                live.record.id,
                again.code,
            )

    @staticmethod
    def _fenced(live: LiveRun, error: StoreError) -> None:
        """The run moved on without this process (requeued or ended elsewhere): it writes nothing
        more, and never retries (the run is someone else's now)."""
        live.failure = error
        log.warning("run %s: %s", live.record.id, error.message)

    def _ending(self, live: LiveRun) -> tuple[TerminalPayload, dict[str, Any]]:
        record, control = live.record, live.control
        if control.failure is not None:
            failure = control.failure
            payload: TerminalPayload = RunFailed(error=failure, usage=record.usage, cost=record.cost)
            return payload, {"error_code": failure.code, "error_message": failure.message}
        if control.reason is not None:
            partial = live.partial_output
            payload = RunCancelled(
                reason=control.reason, partial_output=partial, usage=record.usage, cost=record.cost
            )
            return payload, {
                "output": partial or None,
                "error_code": "cancelled",
                "error_message": control.reason,
            }
        error = ErrorInfo(code="internal_error", message="the run stopped without recording an end")
        return RunFailed(error=error, usage=record.usage, cost=record.cost), {
            "error_code": error.code,
            "error_message": error.message,
        }

    @staticmethod
    def _store_failure(live: LiveRun, error: StoreError) -> tuple[RunFailed, dict[str, Any]]:
        info = ErrorInfo(code=error.code, message=error.message)
        payload = RunFailed(error=info, usage=live.record.usage, cost=live.record.cost)
        return payload, {"error_code": info.code, "error_message": info.message}

    def _lost(self, run_id: str, error: StoreError, kept_through: int | None) -> None:
        """The writer could not store some of a run's writes: that run, and only it, fails, its log
        ending at what the store kept (``kept_through``, when it kept part of the lost commit)."""
        live = self._live.get(run_id)
        recorder = live.recorder if live is not None else None
        if recorder is None:
            # A run whose ending waits for repair is no longer live; its recorder must still
            # rewind, or the next repair would take the lost ending for a stored one.
            pending = self._repairs.get(run_id)
            recorder = pending[0] if pending is not None else None
        if recorder is None:
            return
        if kept_through is not None:
            recorder.committed(kept_through)
        recorder.lose(error)
        if live is not None:
            live.control.fail(ErrorInfo(code=error.code, message=error.message))

    def _dependencies(self, plan: RunPlan | None = None) -> ExecutionDeps:
        if plan is not None:  # its own settings and tools: its snapshot is not shared with other runs
            return ExecutionDeps(
                settings=plan.settings,
                catalog=plan.catalog,
                prompts=self.prompts,
                model_factory=plan.model_factory,
                history=self._history,
                snapshots=ConfigSnapshots(size=1),
                watch=plan.watch,
            )
        return ExecutionDeps(
            settings=self.settings,
            catalog=self.catalog,
            prompts=self.prompts,
            model_factory=self.model_factory,
            history=self._history,
            snapshots=self._snapshots,
        )

    async def _history(self, conversation_id: str) -> list[MessageRecord]:
        return await self.store.messages(conversation_id)

    # reading --------------------------------------------------------------------------------------

    async def status(self, run_id: str, tenant: str | None = None) -> RunRecord:
        """The run's record. With a ``tenant``, another tenant's run is not found (the same answer
        as an unknown id); None reads any tenant's (admins across tenants, the local CLI)."""
        live = self._live.get(run_id)
        record = live.record.model_copy() if live is not None else await self.store.get_run(run_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            raise NotFoundError(f"unknown run {run_id!r}", code="run_not_found")
        return record

    async def settled(self, run_id: str) -> None:
        """Wait until what a run executing here has handed to the store is committed. Its record
        (what :meth:`status` answers) runs ahead of the store by one write batch; a read of the
        store that must agree with it (the snapshot, the whole log) waits for this first."""
        live = self._live.get(run_id)
        if live is not None:
            with contextlib.suppress(StoreError):  # what could not be kept is read as missing
                await live.recorder.durable()

    def durable_events(self, run_id: str, after: int = 0) -> list[RunEvent]:
        """The events after ``after`` of a run executing in this process that are durable now
        (for a run just started: its ``run.queued``); empty for any other run. A door sends these
        before anything else gets the event loop, so a client sees its run at once instead of
        after the run's first steps have executed."""
        live = self._live.get(run_id)
        return live.durable_after(after) if live is not None else []

    async def wait(self, run_id: str, tenant: str | None = None) -> RunRecord:
        """Return the run's record once it has ended and its ending is durable. Raises the store's
        error if the ending could not be stored (what the client is told equals what is kept)."""
        if tenant is not None:
            await self.status(run_id, tenant)
        live = self._live.get(run_id)
        if live is not None:
            await live.done.wait()
            if live.failure is not None:
                raise live.failure
            return live.record.model_copy()
        while True:
            record = await self.status(run_id)
            if record.status.terminal:
                return record
            pending = self._repairs.get(run_id)
            if pending is not None and pending[0].lost is not None:
                raise pending[0].lost  # it ended here, but its end is not stored yet
            await asyncio.sleep(STORE_POLL_SECONDS)

    async def stream(self, run_id: str, after: int = 0, tenant: str | None = None) -> AsyncIterator[RunEvent]:
        """Every event after ``after``, in order, exactly once, until the terminal event.

        Works for live runs of this process, finished runs, and runs of other processes (polled)."""
        if tenant is not None:
            await self._read_through(lambda: self.status(run_id, tenant))
        live = self._live.get(run_id)
        if live is not None:
            async for event in live.follow(after):
                yield event
            return
        record = await self._read_through(lambda: self.status(run_id))  # a database restart: wait
        cursor = after
        while True:
            events = await self._read_through(functools.partial(self.store.events, run_id, after=cursor))
            for event in events:
                yield event
                cursor = event.seq
                if event.terminal:
                    return
            if not events:
                if record.status.terminal:
                    return
                async for event in self._tail(run_id, cursor):
                    yield event
                    cursor = event.seq
                    if event.terminal:
                        return
                record = await self._read_through(lambda: self.status(run_id))

    async def _read_through(self, read: Callable[[], Awaitable[T]]) -> T:
        """A read for a stream, retried while the store is briefly unreachable (a database restart)
        for up to ``store.write_timeout``: the stream resumes where it was instead of breaking."""
        deadline = asyncio.get_running_loop().time() + self.settings.store.write_timeout
        while True:
            try:
                return await read()
            except AgentstageError:
                raise
            except Exception as error:
                if asyncio.get_running_loop().time() > deadline:
                    raise StoreError(f"the store cannot be read: {type(error).__name__}: {error}") from None
                await asyncio.sleep(STORE_POLL_SECONDS)

    async def _tail(self, run_id: str, cursor: int) -> AsyncIterator[RunEvent]:
        """Live events of another process's run: from the bus while it delivers them in order,
        else nothing for a moment (the caller reads the store, the source of truth, again)."""
        if self.bus is None:
            await asyncio.sleep(STORE_POLL_SECONDS)
            return
        while True:
            events = await self.bus.tail(run_id, cursor, wait=BUS_WAIT_SECONDS)
            if events is None:  # the bus is gone: poll the store until it is back
                await asyncio.sleep(STORE_POLL_SECONDS)
                return
            if not events or events[0].seq != cursor + 1:
                return  # quiet for a while, or the bus missed some: the store fills the gap
            for event in events:
                if event.seq != cursor + 1:
                    return
                yield event
                cursor = event.seq
                if event.terminal:
                    return

    async def events(
        self, run_id: str, after: int = 0, limit: int | None = None, tenant: str | None = None
    ) -> list[RunEvent]:
        await self.status(run_id, tenant)
        return await self.store.events(run_id, after=after, limit=limit)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        limit: int = 50,
        offset: int = 0,
        tenant: str | None = None,
        query: str | None = None,
        id_prefix: str | None = None,
    ) -> list[RunRecord]:
        """Runs newest first; ``query`` keeps those whose input or output contains it, ``id_prefix``
        those whose id starts with it."""
        if query or id_prefix:
            return await self.store.search_runs(
                text=query, id_prefix=id_prefix, status=status, limit=limit, offset=offset, tenant=tenant
            )
        return await self.store.list_runs(status=status, limit=limit, offset=offset, tenant=tenant)

    async def count_runs(self, *, status: RunStatus | None = None, tenant: str | None = None) -> int:
        return await self.store.count_runs(status=status, tenant=tenant)

    async def run_page(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0, tenant: str | None = None
    ) -> tuple[list[RunRecord], int]:
        """A page of runs newest first, and how many runs match in all, in one read of the store."""
        return await self.store.run_page(status=status, limit=limit, offset=offset, tenant=tenant)

    async def snapshot(self, run_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """The run's whole snapshot (its configuration joined with its own facts), or None if the
        run never started."""
        record = await self.status(run_id, tenant)
        if record.snapshot_hash is None:
            return None
        await self.settled(run_id)
        config = await self.store.snapshot(record.snapshot_hash)
        if config is None:
            return None
        reason = None
        for event in await self.store.events(run_id, limit=4):
            if isinstance(event.payload, RunStarted):
                reason = event.payload.mode_reason
        return assemble(config, record, mode_reason=reason)

    async def replay(
        self,
        run_id: str,
        *,
        tenant: str | None = None,
        live: bool = False,
        profile: str | None = None,
        model: str | None = None,
        correlation_id: str | None = None,
    ) -> RunRecord:
        """Start a new run that replays a finished one exactly from its recorded answers (no model,
        no tool), or with ``live`` re-runs its configuration (optionally another profile/model).
        See :class:`~agentstage.runtime.replay.Snapshots` for export, import and diff."""
        return await self.snapshots.replay(
            run_id, tenant=tenant, live=live, profile=profile, model=model, correlation_id=correlation_id
        )

    async def check_store(self) -> None:
        """Prove the store is writable now (at most one probe write a second); raise if not."""
        await self._writer.probe()

    # cancelling -----------------------------------------------------------------------------------

    async def cancel(
        self, run_id: str, reason: str = "cancelled by the user", tenant: str | None = None
    ) -> RunRecord:
        """Ask a run to stop. Returns its record as it stands; raises ConflictError if it has ended."""
        if tenant is not None:
            await self.status(run_id, tenant)
        live = self._live.get(run_id)
        if live is not None and live.recorder.terminal is None:
            live.control.cancel(reason)
            return live.record.model_copy()
        record = await self.status(run_id)
        if record.status.terminal:
            raise ConflictError(
                f"run {run_id!r} has already ended ({record.status.value}); it cannot be cancelled",
                code="run_finished",
                details={"run_status": record.status.value},
            )
        if live is None:
            if self.queue is not None and await self._cancel_unclaimed(run_id, reason):
                return await self.status(run_id)
            await self.store.request_cancel(run_id, reason)
        return record

    async def _cancel_unclaimed(self, run_id: str, reason: str) -> bool:
        """A queued run no worker has claimed yet: claim it here and end it ``cancelled`` at once
        (it never starts; the queue's job then finds it ended)."""
        claim = await self.store.claim_run(run_id, self.worker_id, utc_now(), None)
        if claim.record is None:
            return False
        live = self._claimed(claim.record)
        live.control.cancel(reason)
        await self._execute(live)
        try:
            if self.queue is not None:
                await self.queue.withdraw(run_id)
        except Exception as error:  # the job then finds its run ended: a wasted claim, nothing worse
            log.warning("run %s: its job stays in the queue: %s: %s", run_id, type(error).__name__, error)
        return True

    def _claimed(self, record: RunRecord) -> LiveRun:
        """A run this process now executes for the queue: its log continues after what is stored,
        every write fenced by its attempt."""
        recorder = RunRecorder(
            record,
            self._writer,
            max_event_bytes=self.settings.runtime.max_event_bytes,
            next_seq=record.last_seq + 1,
            fence=record.attempt,
        )
        options = RunOptions.model_validate(record.options)
        request = RunRequest(
            input=record.input,
            mode=record.mode,
            profile=record.profile,
            options=options,
            conversation_id=record.conversation_id,
            correlation_id=record.correlation_id,
            tenant=record.tenant,
        )
        live = LiveRun(recorder=recorder, request=request)
        self._live[record.id] = live
        return live

    # executing for the queue ------------------------------------------------------------------------

    async def execute_queued(self, run_id: str) -> None:
        """Claim a queued run and execute it here to its end (a worker's job). Does nothing if
        another process has it or it has ended; raises :class:`TenantBusy` if its tenant has no
        free slot (the queue offers it again later). A cancelled caller stops the run
        (``shutdown``) and waits for its ending to be written."""
        runtime, limit, record = self.settings.runtime, None, None
        if runtime.tenant_limits or runtime.tenant_max_concurrent_runs is not None:
            record = await self.store.get_run(run_id)  # whose run it is decides the limit
            if record is None or record.status.terminal:
                return
            limit = runtime.tenant_limit(record.tenant)
        claim = await self.store.claim_run(run_id, self.worker_id, utc_now(), limit)
        if claim.tenant_busy and record is not None:  # only a limited claim is ever busy
            raise TenantBusy(record.tenant)
        if claim.record is None:
            return
        live = self._claimed(claim.record)
        if claim.record.cancel_requested:
            live.control.cancel("cancelled before it started")
        task = live.task = asyncio.create_task(self._execute(live), name=f"run-{run_id}")
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            live.control.cancel("shutdown")
            await task
            raise

    def executes(self, run_id: str) -> bool:
        """Whether this process is executing the run now."""
        live = self._live.get(run_id)
        return live is not None and live.recorder.terminal is None

    async def drain(self, seconds: float) -> None:
        """Let this process's runs finish for up to ``seconds``, then cancel the rest
        with reason ``shutdown`` and wait for their endings (a worker's graceful stop)."""
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=seconds)
        for live in list(self._live.values()):
            live.control.cancel("shutdown")
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.runtime.cancel_grace + 5)

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
                try:
                    item.record = await self.wait(item.record.id)
                except StoreError as error:
                    item.error = error.to_dict()
            if on_result is not None:
                outcome = on_result(item)
                if outcome is not None:
                    await outcome

        await asyncio.gather(*(finish(item) for item in items))
        return items

    # background -----------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.runtime.heartbeat_interval
        beats = 0
        while True:
            await asyncio.sleep(interval)
            beats += 1
            try:
                await self._beat()
                if beats % SWEEP_EVERY_BEATS == 0:
                    await self._sweeper.sweep(at_startup=False)
            except Exception as error:  # the store may be briefly unavailable; the next beat retries
                log.warning(
                    "heartbeat failed (retried at the next beat): %s: %s", type(error).__name__, error
                )

    async def _beat(self) -> None:
        active = [run_id for run_id, live in self._live.items() if live.recorder.terminal is None]
        if not active:
            return
        await self.store.owned_heartbeat(active, self.worker_id, utc_now())
        for run_id in await self.store.cancel_requested(active):
            with contextlib.suppress(AgentstageError):
                await self.cancel(run_id, reason="cancelled by request from another process")

    async def _repair_loop(self) -> None:
        """While endings wait to be stored, try again a few times a second: they are written as
        soon as the store takes them (a lock released, disk space back)."""
        while True:
            await self._repairs_waiting.wait()
            await asyncio.sleep(REPAIR_INTERVAL)
            try:
                await self._repair()
            except Exception as error:  # never expected: retried at the next turn
                log.warning("repairing run endings failed: %s: %s", type(error).__name__, error)
            if not self._repairs:
                self._repairs_waiting.clear()

    async def _repair(self) -> None:
        """Retry writing the endings the store could not take when their runs ended."""
        for run_id, (recorder, payload, fields) in list(self._repairs.items()):
            recorder.finish(payload, **fields)
            try:
                await recorder.durable()
            except StoreError:
                continue
            self._repairs.pop(run_id, None)
            log.warning("run %s: its end is stored now (%s)", run_id, payload.error.code)


async def _acquire_unless(lock: Lock, stop: asyncio.Event) -> bool:
    """Acquire ``lock``, unless ``stop`` is set first (then nothing is held). If the caller itself
    is cancelled while it waits, nothing is held either: an acquisition that completes after the
    caller left gives the lock back at once, so no later run of the conversation or tenant waits
    for a holder that is gone."""
    if stop.is_set():
        return False
    if not lock.locked():
        await lock.acquire()  # free: returns at once
        return True
    acquiring = asyncio.ensure_future(lock.acquire())
    stopping = asyncio.ensure_future(stop.wait())
    acquired = False
    try:
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        acquired = acquiring.done() and not acquiring.cancelled() and not stop.is_set()
        return acquired
    finally:
        stopping.cancel()
        if not acquired:  # stopped, or the caller was cancelled: whatever was acquired goes back
            if acquiring.done():
                _release_if_acquired(lock, acquiring)
            else:
                acquiring.add_done_callback(functools.partial(_release_if_acquired, lock))
                acquiring.cancel()


def _release_if_acquired(lock: Lock, acquiring: asyncio.Future[Any]) -> None:
    if not acquiring.cancelled() and acquiring.exception() is None:
        lock.release()
