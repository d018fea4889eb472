"""Replay and re-run: a finished run is its own cassette.

An exact replay is a new run (``replay_of`` names the original) whose model is the ``replay``
provider and whose tools are the replaying tool layer: both answer from the original's log
(``model.response`` / ``tool.result``), so no model is asked, no tool runs and nothing reaches the
network. A :class:`ReplayWatch` compares every event of the replay with the original's as it is
recorded; the first difference (code that now asks for another tool call, a prompt that changed…)
fails the replay with ``replay_diverged``, naming the step. Where the original ended for a reason
that is not in its log (cancelled, timed out, its worker died) the replay ends the same way at the
same point. A live re-run executes the snapshot's configuration again with a real model,
optionally with another profile or model.

The concrete replay model and tools come from :mod:`agentstage.runtime.wiring` through
:class:`ReplayParts`, so this module names no provider and no tool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agentstage.core.events import ErrorInfo, RunEvent, RunStarted
from agentstage.core.messages import Message
from agentstage.core.model import Model
from agentstage.core.records import RunRecord
from agentstage.core.tools import Tool
from agentstage.errors import ConfigError, ConflictError, NotFoundError, RunError
from agentstage.runtime.catalog import ToolCatalog, describe
from agentstage.runtime.control import RunControl
from agentstage.runtime.diff import (
    SKIPPED_EVENTS,
    diff_runs,
    request_difference,
    signature,
    step_of,
    summarize,
)
from agentstage.runtime.execution import ModelFactory
from agentstage.runtime.requests import RunOptions, RunRequest
from agentstage.runtime.snapshot import assemble, check_version
from agentstage.runtime.snapshot_file import export_document, imported_record, read_export
from agentstage.settings import ChainEntry, ProfileSettings, ProviderSettings, Settings
from agentstage.store.base import Batch

if TYPE_CHECKING:
    from agentstage.runtime.service import RunService

REPLAY_PROVIDER = "replay"


class ReplayParts(Protocol):
    """The concrete pieces a replay needs; :mod:`agentstage.runtime.wiring` provides them."""

    def model(self, events: Sequence[RunEvent], *, model_name: str, native_tools: bool) -> Model:
        """A model that answers each call with the next recorded answer of ``events``."""
        ...

    def tools(
        self,
        events: Sequence[RunEvent],
        specs: Sequence[Mapping[str, Any]],
        installed: Mapping[str, Tool],
    ) -> list[Tool]:
        """Tools named by ``specs`` that return the recorded results of ``events``, in order;
        ``installed`` (by ``name:version``) lends them its prompt guidance."""
        ...

    def models_for(self, settings: Settings, current: ModelFactory) -> ModelFactory:
        """Real model chains for ``settings`` (sharing ``current``'s circuit breakers)."""
        ...


class GivenHistory:
    """A re-run continues the same conversation the original saw, without joining it."""

    def __init__(self, messages: list[Message]):
        self.messages = messages

    def bind(self, control: RunControl) -> None:
        return None

    def history(self) -> list[Message] | None:
        return self.messages

    def seen(self, event: RunEvent) -> None:
        return None

    def ending(self, output: str | None, error: ErrorInfo | None) -> ErrorInfo | None:
        return None


class ReplayWatch:
    """Holds a replay to the original's log, event by event, and to the way it ended."""

    def __init__(self, original: Sequence[RunEvent], history: list[Message]):
        self.expected = [e for e in original if e.type not in SKIPPED_EVENTS and not e.terminal]
        self.terminal = original[-1]
        self.position = 0
        self.step: Mapping[str, Any] | None = None
        self.verdict: ErrorInfo | None = None
        self.control: RunControl | None = None
        self._history = history

    def bind(self, control: RunControl) -> None:
        self.control = control

    def history(self) -> list[Message] | None:
        return self._history

    def seen(self, event: RunEvent) -> None:
        if self.verdict is not None:
            return
        data = event.data
        if self.position >= len(self.expected):
            ended = summarize(self.terminal.type, self.terminal.data)
            raise self._diverged(
                f"the replay {summarize(event.type, data)}; the original had ended here: it {ended}"
            )
        want = self.expected[self.position]
        if signature(event.type, data) != signature(want.type, want.data):
            raise self._diverged(self._difference(event, want))
        self.position += 1
        if event.type == "step.started":
            self.step = data
        if self.position == len(self.expected) and self.terminal.type != "run.completed":
            self._end_like_original()

    def ending(self, output: str | None, error: ErrorInfo | None) -> ErrorInfo | None:
        """None when the replay ends as the original did; otherwise why it does not."""
        if self.verdict is not None:
            return None
        how = "completed" if error is None else f"failed with {error.code} ({error.message})"
        if self.position < len(self.expected):
            upcoming = self.expected[self.position]
            return self._verdict(
                f"the replay {how} here; the original went on: it {summarize(upcoming.type, upcoming.data)}"
            )
        original = self.terminal
        said = f"the original {summarize(original.type, original.data)}"
        if original.type == "run.completed":
            if error is None and output == original.data.get("output"):
                return None
            if error is None:
                return self._verdict(f"the replay completed with the answer {output!r}; {said}")
        elif original.type == "run.failed" and error is not None:
            if error.code == (original.data.get("error") or {}).get("code"):
                return None
        return self._verdict(f"the replay {how}; {said}")

    def _difference(self, event: RunEvent, want: RunEvent) -> str:
        if event.type == want.type == "model.request":
            detail = request_difference(want.data, event.data) or "its parameters differ"
            return f"the model request differs from the recorded one ({detail})"
        return (
            f"the replay {summarize(event.type, event.data)}; the original {summarize(want.type, want.data)}"
        )

    def _end_like_original(self) -> None:
        """The original stopped here for a reason its log cannot replay: stop the same way."""
        if self.control is None:
            return
        data = self.terminal.data
        if self.terminal.type == "run.cancelled":
            self.control.cancel(str(data.get("reason") or "cancelled"))
            return
        error = data.get("error") or {}
        self.control.fail(ErrorInfo(code=str(error.get("code")), message=str(error.get("message"))))

    def _verdict(self, what: str) -> ErrorInfo:
        self.verdict = ErrorInfo(
            code="replay_diverged", message=f"replay diverged at {step_of(self.step)}: {what}"
        )
        return self.verdict

    def _diverged(self, what: str) -> RunError:
        verdict = self._verdict(what)
        return RunError(verdict.message, code=verdict.code)


@dataclass
class RunPlan:
    """How a run that replays or re-runs another is set up: its own settings, model and tools."""

    replay_of: str
    settings: Settings
    model_factory: ModelFactory
    catalog: ToolCatalog
    watch: ReplayWatch | GivenHistory

    def bind(self, control: RunControl) -> RunPlan:
        self.watch.bind(control)
        return self


def recorded_history(events: Sequence[RunEvent], count: int) -> list[Message]:
    """The conversation a run continued, as its first model request carried it."""
    if count <= 0:
        return []
    request = next((e for e in events if e.type == "model.request"), None)
    if request is None:
        return []
    messages = request.data.get("messages", [])
    start = next((i for i, m in enumerate(messages) if m.get("role") != "system"), len(messages))
    history = messages[start : start + count]
    if len(history) != count or any(m.get("role") not in ("user", "assistant") for m in history):
        return []
    return [Message(role=m["role"], content=m.get("content", "")) for m in history]


class Snapshots:
    """Show, export, import, diff and replay runs: the snapshot verbs of a :class:`RunService`."""

    def __init__(self, service: RunService, parts: ReplayParts | None):
        self.service = service
        self.parts = parts

    # reading ----------------------------------------------------------------------------------------

    async def show(self, run_id: str, tenant: str | None = None) -> dict[str, Any]:
        """The run's whole snapshot (secrets were masked when it was written)."""
        document = await self.service.snapshot(run_id, tenant)
        if document is None:
            raise self._not_started(run_id)
        check_version(document)
        return document

    async def finished(
        self, run_id: str, tenant: str | None
    ) -> tuple[RunRecord, dict[str, Any], list[RunEvent]]:
        """A run that has ended, its snapshot and its whole log."""
        record = await self.service.status(run_id, tenant)
        if not record.status.terminal:
            raise ConflictError(
                f"run {run_id!r} is still {record.status.value}; wait until it has ended "
                f"(or cancel it with `agent runs cancel`) and try again",
                code="run_not_finished",
                details={"run_status": record.status.value},
            )
        document, events = await self._loaded(record)
        if not events or not events[-1].terminal:
            raise ConflictError(f"run {run_id!r} has no complete event log", code="run_not_finished")
        return record, document, events

    async def _loaded(self, record: RunRecord) -> tuple[dict[str, Any], list[RunEvent]]:
        """The run's whole snapshot and its log, read together."""
        store = self.service.store
        config: dict[str, Any] | None = None
        events: list[RunEvent] = []
        await self.service.settled(record.id)
        if record.snapshot_hash is not None:
            config, events = await asyncio.gather(
                store.snapshot(record.snapshot_hash), store.events(record.id)
            )
        if config is None:
            raise self._not_started(record.id)
        reason = next((e.payload.mode_reason for e in events if isinstance(e.payload, RunStarted)), None)
        document = assemble(config, record, mode_reason=reason)
        check_version(document)
        return document, events

    @staticmethod
    def _not_started(run_id: str) -> ConflictError:
        return ConflictError(
            f"run {run_id!r} has not started, so it has no snapshot (it is written when a run starts)",
            code="run_not_started",
        )

    async def export(self, run_id: str, tenant: str | None = None) -> dict[str, Any]:
        """The run's snapshot and event log as one self-checking document (see ``snapshot_file``)."""
        _, document, events = await self.finished(run_id, tenant)
        return export_document(document, events)

    async def diff(self, a: str, b: str, tenant: str | None = None) -> dict[str, Any]:
        """Configuration differences, the first diverging event, and both outcomes."""
        first, second = await self.service.status(a, tenant), await self.service.status(b, tenant)
        (left, left_events), (right, right_events) = await asyncio.gather(
            self._loaded(first), self._loaded(second)
        )
        return diff_runs(left, left_events, right, right_events)

    # importing --------------------------------------------------------------------------------------

    async def import_run(self, text: str | bytes, tenant: str = "default") -> RunRecord:
        """Store an exported run (record, log and configuration) in one transaction, or nothing."""
        exported = read_export(text)
        run_id = exported.record_id
        if await self.service.store.get_run(run_id) is not None:
            raise ConflictError(f"run {run_id!r} is already in this store", code="run_exists")
        record = imported_record(exported, tenant)
        batch = Batch()
        writes = batch.of(run_id)
        writes.new_run = record
        writes.events = list(exported.events)
        writes.snapshots = {exported.config_hash: exported.config}
        refused = await self.service.store.write(batch)
        if run_id in refused:
            raise refused[run_id]
        return record

    # replaying --------------------------------------------------------------------------------------

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
        """Start the replay (or live re-run) of a finished run; returns the new run's record."""
        if not live and (profile is not None or model is not None):
            raise ConfigError(
                "a profile or model override needs a live re-run (live=true / --live): an exact "
                "replay answers from the recording, whatever the model",
                code="replay_override_needs_live",
            )
        record, document, events = await self.finished(run_id, tenant)
        parts = self._parts()
        if live:
            request, plan = self._live_plan(record, document, events, parts, profile, model)
        else:
            request, plan = self._exact_plan(record, document, events, parts)
        if correlation_id is not None:
            request = request.model_copy(update={"correlation_id": correlation_id})
        return await self.service.start(request, plan=plan)

    def _parts(self) -> ReplayParts:
        if self.parts is None:
            raise ConfigError("this service was built without replay support", code="replay_unavailable")
        return self.parts

    def _exact_plan(
        self, record: RunRecord, document: dict[str, Any], events: list[RunEvent], parts: ReplayParts
    ) -> tuple[RunRequest, RunPlan]:
        recorded = document.get("profile") or {}
        first = next((e for e in events if e.type == "model.request"), None)
        chain = recorded.get("chain") or [{}]
        model_name = str((first.data.get("model") if first else None) or chain[0].get("model") or "replay")
        native = recorded.get("native_tools")
        if not isinstance(native, bool):  # version 1 did not record it: a react request says
            native = not any(e.type == "model.request" and e.data.get("response_format") for e in events)
        settings = self.service.settings
        profile = ProfileSettings(
            description=f"exact replay of run {record.id}",
            chain=[ChainEntry(provider=REPLAY_PROVIDER, model=model_name)],
            params=dict(recorded.get("params") or {}),
            limits=dict(recorded.get("limits") or {}),
        )
        replay_settings = settings.model_copy(
            update={
                "providers": {**settings.providers, REPLAY_PROVIDER: ProviderSettings(type="replay")},
                "profiles": {**settings.profiles, record.profile: profile},
            }
        )
        installed = {f"{tool.name}:{tool.version}": tool for tool in self.service.catalog.list_tools()}
        tools = parts.tools(events, self._tool_specs(document, events), installed)
        catalog = ToolCatalog(
            tools, call_timeout=settings.tools.call_timeout, max_output_chars=settings.tools.max_output_chars
        )

        def replay_model(_profile: str) -> Model:
            return parts.model(events, model_name=model_name, native_tools=native)

        history = recorded_history(events, int(document.get("history_messages") or 0))
        plan = RunPlan(record.id, replay_settings, replay_model, catalog, ReplayWatch(events, history))
        request = RunRequest(
            input=record.input,
            mode=record.resolved_mode or record.mode,
            profile=record.profile,
            options=RunOptions.model_validate(record.options),
            tenant=record.tenant,
        )
        return request, plan

    def _tool_specs(self, document: dict[str, Any], events: list[RunEvent]) -> list[dict[str, Any]]:
        """Each tool of the original as the model saw it: from the snapshot (version 2), else from a
        recorded request, else from the tool as installed now."""
        requested = {
            spec.get("name"): spec
            for event in events
            if event.type == "model.request"
            for spec in event.data.get("tools") or []
        }
        specs = []
        for entry in document.get("tools") or []:
            identifier = str(entry.get("id"))
            name, _, version = identifier.rpartition(":")
            if "parameters" in entry:
                specs.append({**entry, "name": name, "version": version})
            elif name in requested:
                specs.append({**requested[name], "name": name, "version": version, "id": identifier})
            else:
                try:
                    specs.append(describe(self.service.catalog.get(identifier)))
                except NotFoundError:
                    raise ConfigError(
                        f"tool {identifier!r} of run {document.get('run_id')!r} cannot be replayed: its "
                        "schema was not recorded and it is not installed here",
                        code="replay_tool_missing",
                    ) from None
        return specs

    def _live_plan(
        self,
        record: RunRecord,
        document: dict[str, Any],
        events: list[RunEvent],
        parts: ReplayParts,
        profile: str | None,
        model: str | None,
    ) -> tuple[RunRequest, RunPlan]:
        settings = self.service.settings
        if profile is not None:
            chosen = settings.profile(profile)
            name = profile
        else:
            chosen, name = self._recorded_profile(record, document, settings), record.profile
        if model is not None:
            primary = chosen.chain[0].model_copy(update={"model": model})
            chosen = chosen.model_copy(update={"chain": [primary, *chosen.chain[1:]]})
        live_settings = settings.model_copy(update={"profiles": {**settings.profiles, name: chosen}})
        tools = [str(entry.get("id")) for entry in document.get("tools") or []]
        for identifier in tools:
            try:
                self.service.catalog.get(identifier)
            except NotFoundError:
                raise NotFoundError(
                    f"run {record.id!r} used tool {identifier!r}, which is not available here",
                    code="tool_not_found",
                ) from None
        history = recorded_history(events, int(document.get("history_messages") or 0))
        plan = RunPlan(
            record.id,
            live_settings,
            parts.models_for(live_settings, self.service.model_factory),
            self.service.catalog,
            GivenHistory(history),
        )
        request = RunRequest(
            input=record.input,
            mode=record.mode,
            profile=name,
            options=RunOptions.model_validate({**record.options, "tools": tools}),
            tenant=record.tenant,
        )
        return request, plan

    @staticmethod
    def _recorded_profile(record: RunRecord, document: dict[str, Any], settings: Settings) -> ProfileSettings:
        """The original's profile as its snapshot recorded it, on the providers configured here."""
        recorded = document.get("profile") or {}
        chain = []
        for entry in recorded.get("chain") or []:
            provider, kind = str(entry.get("provider")), str(entry.get("type"))
            if kind == "replay":
                raise ConfigError(
                    f"run {record.id!r} is itself an exact replay (of {record.replay_of!r}); re-run "
                    "that run live, or give a profile to re-run this one with",
                    code="replay_provider_missing",
                )
            configured = settings.providers.get(provider)
            if configured is None or configured.type != kind:
                raise ConfigError(
                    f"run {record.id!r} used provider {provider!r} ({kind}), which is not configured here"
                    f"{'' if configured is None else f' (it is now of type {configured.type!r})'}; "
                    "give a profile to re-run it with",
                    code="replay_provider_missing",
                )
            chain.append(
                ChainEntry(provider=provider, model=entry.get("model"), params=entry.get("params") or {})
            )
        if not chain:
            raise ConfigError(
                f"the snapshot of run {record.id!r} records no model chain", code="snapshot_invalid"
            )
        return ProfileSettings(
            description=f"the configuration of run {record.id}",
            chain=chain,
            params=dict(recorded.get("params") or {}),
            limits=dict(recorded.get("limits") or {}),
        )


__all__ = [
    "GivenHistory",
    "ReplayParts",
    "ReplayWatch",
    "RunPlan",
    "Snapshots",
    "recorded_history",
]
