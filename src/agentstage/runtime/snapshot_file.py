"""Exported runs: a run's snapshot and its event log as one JSON file that checks itself.

The file (``agent snapshot export``) is::

    {"format": "agentstage.run-export", "schema_version": 2, "agentstage": "0.1.0",
     "exported_at": "…", "snapshot_hash": "<sha256 of the snapshot's canonical JSON>",
     "snapshot": {…the whole snapshot…}, "events": [{"run_id", "seq", "type", "ts", "data", …}, …],
     "hash": "<sha256 of the canonical JSON of every other field>"}

The log travels with the snapshot because a finished run is its own cassette: an imported run can
be replayed where it was never executed. Reading a file refuses, before anything is written, text
that is not JSON, a file that is not an export, a schema version this agentstage does not read, a
file whose content no longer matches its hash (edited by hand), and a log that does not belong to
its snapshot. The hash guards against accidents and hand edits, not against a forger (anyone can
recompute it); imported runs land in the importer's own tenant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from agentstage import __version__
from agentstage.core.events import EventType, RunCancelled, RunEvent, RunFailed, RunStarted, parse_payload
from agentstage.core.records import RunRecord
from agentstage.core.tools import validation_details
from agentstage.errors import InvalidInputError
from agentstage.runtime.requests import RunOptions
from agentstage.runtime.snapshot import check_version, snapshot_hash, split
from agentstage.types import RunStatus

EXPORT_FORMAT = "agentstage.run-export"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_STATUS_EVENT = {"completed": "run.completed", "failed": "run.failed", "cancelled": "run.cancelled"}


class _Mode(BaseModel):
    requested: str
    resolved: str | None = None
    reason: str | None = None


class _Profile(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64)
    chain: list[dict[str, Any]] = Field(min_length=1)
    params: dict[str, Any]
    limits: dict[str, Any]


class SnapshotDocument(BaseModel):
    """The fields of a finished run's snapshot that an import relies on."""

    model_config = ConfigDict(extra="allow")
    schema_version: int
    run_id: str = Field(pattern=_UUID)
    created_at: AwareDatetime
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None
    mode: _Mode
    profile: _Profile
    tools: list[dict[str, Any]]
    prompt: dict[str, Any]
    environment: dict[str, str]
    code: dict[str, Any]
    options: dict[str, Any]
    input: str
    history_messages: int = Field(default=0, ge=0)
    conversation_id: str | None = None
    output: str | None
    status: Literal["completed", "failed", "cancelled"]
    metrics: dict[str, Any]
    replay_of: str | None = Field(default=None, pattern=_UUID)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str
    seq: int = Field(ge=1)
    type: EventType
    ts: AwareDatetime
    data: dict[str, Any]
    trace_id: str | None = None
    span_id: str | None = None


class _ExportFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["agentstage.run-export"]
    schema_version: int
    agentstage: str
    exported_at: str
    snapshot_hash: str
    snapshot: dict[str, Any]
    events: list[_Event] = Field(min_length=2)
    hash: str


@dataclass(frozen=True)
class ExportedRun:
    """A validated export: the snapshot, the log and the configuration half (with its hash)."""

    snapshot: SnapshotDocument
    events: Sequence[RunEvent]
    config: dict[str, Any]
    config_hash: str

    @property
    def record_id(self) -> str:
        return self.snapshot.run_id


def content_hash(document: dict[str, Any]) -> str:
    return snapshot_hash({key: value for key, value in document.items() if key != "hash"})


def export_document(snapshot: dict[str, Any], events: Sequence[RunEvent]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "schema_version": snapshot.get("schema_version"),
        "agentstage": __version__,
        "exported_at": datetime.now(UTC).isoformat(),
        "snapshot_hash": snapshot_hash(snapshot),
        "snapshot": snapshot,
        "events": [event.to_json_dict() for event in events],
    }
    document["hash"] = content_hash(document)
    return document


def _invalid(message: str, **details: Any) -> InvalidInputError:
    return InvalidInputError(message, code="snapshot_invalid", details=details or None)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse(text: str | bytes) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise InvalidInputError(
            "the snapshot file is not UTF-8 JSON text", code="snapshot_not_json"
        ) from None
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"the snapshot file is not JSON: {error.msg} at line {error.lineno}, column {error.colno}",
            code="snapshot_not_json",
        ) from None
    except ValueError as error:
        raise InvalidInputError(f"the snapshot file is not JSON: {error}", code="snapshot_not_json") from None


def read_export(text: str | bytes) -> ExportedRun:
    """Validate an exported run completely; raise a clear error naming the first problem."""
    document = _parse(text)
    if not isinstance(document, dict):
        raise _invalid(f"the snapshot file holds a JSON {type(document).__name__}, not an exported run")
    if document.get("format") != EXPORT_FORMAT:
        raise _invalid(
            f"the file is not an agentstage run export (its 'format' is {document.get('format')!r}, "
            f"expected {EXPORT_FORMAT!r}); make one with `agent snapshot export RUN -o FILE`"
        )
    check_version(document)
    recorded, actual = document.get("hash"), content_hash(document)
    if recorded != actual:
        raise InvalidInputError(
            f"the snapshot file was changed after it was exported: its content hashes to {actual[:16]}…, "
            f"but the file says {str(recorded)[:16]!r}…; refusing to import it",
            code="snapshot_tampered",
        )
    try:
        exported = _ExportFile.model_validate(document)
        snapshot = SnapshotDocument.model_validate(exported.snapshot)
        RunOptions.model_validate(snapshot.options)
    except ValidationError as error:
        details = validation_details(error)
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        raise _invalid(f"the exported run is not valid: {summary}", errors=details) from None
    if exported.snapshot_hash != snapshot_hash(exported.snapshot):
        raise InvalidInputError("the snapshot does not match its snapshot_hash", code="snapshot_tampered")
    if snapshot.schema_version != exported.schema_version:
        raise _invalid(
            f"the snapshot's schema version {snapshot.schema_version} differs from the file's "
            f"{exported.schema_version}"
        )
    events = _events(exported.events, snapshot)
    config = split(exported.snapshot)
    digest = snapshot_hash(config)
    named = next((e.payload.snapshot_hash for e in events if isinstance(e.payload, RunStarted)), None)
    if named is not None and named != digest:
        raise _invalid("the snapshot's configuration does not match the hash its run.started event names")
    return ExportedRun(snapshot, events, config, digest)


def _events(raw: list[_Event], snapshot: SnapshotDocument) -> list[RunEvent]:
    events = []
    for index, item in enumerate(raw, start=1):
        where = f"event {index} ({item.type})"
        if item.seq != index:
            raise _invalid(f"{where} has seq {item.seq}; a log is numbered 1, 2, 3 … without gaps")
        if item.run_id != snapshot.run_id:
            raise _invalid(f"{where} belongs to run {item.run_id!r}, not to {snapshot.run_id!r}")
        try:
            payload = parse_payload(item.type, item.data)
        except ValidationError as error:
            summary = "; ".join(f"{d['field']}: {d['message']}" for d in validation_details(error)[:3])
            raise _invalid(f"{where} is not valid: {summary}") from None
        events.append(
            RunEvent(item.run_id, item.seq, item.ts, payload, trace_id=item.trace_id, span_id=item.span_id)
        )
    if events[0].type != "run.queued":
        raise _invalid(f"the log starts with {events[0].type!r}, not 'run.queued'")
    if events[-1].type != _STATUS_EVENT[snapshot.status]:
        raise _invalid(f"the run is {snapshot.status} but its log ends with {events[-1].type!r}")
    if any(event.terminal for event in events[:-1]):
        raise _invalid("the log has an ending before its last event")
    return events


def imported_record(exported: ExportedRun, tenant: str) -> RunRecord:
    """The run's record as it was, in the importer's tenant."""
    snapshot, events = exported.snapshot, exported.events
    metrics = dict(snapshot.metrics)
    usage = metrics.pop("usage", None) or {}
    cost = float(metrics.pop("cost", 0.0) or 0.0)
    metrics["history_messages"] = snapshot.history_messages
    error_code = error_message = None
    ending = events[-1].payload
    if isinstance(ending, RunFailed):
        error_code, error_message = ending.error.code, ending.error.message
    elif isinstance(ending, RunCancelled):
        error_code, error_message = "cancelled", ending.reason
    started = next((e.payload for e in events if isinstance(e.payload, RunStarted)), None)
    try:
        return RunRecord(
            id=snapshot.run_id,
            tenant=tenant,
            status=RunStatus(snapshot.status),
            input=snapshot.input,
            mode=snapshot.mode.requested,
            profile=snapshot.profile.name,
            options=snapshot.options,
            resolved_mode=snapshot.mode.resolved,
            conversation_id=snapshot.conversation_id,
            output=snapshot.output,
            error_code=error_code,
            error_message=error_message,
            usage=usage,
            cost=cost,
            created_at=snapshot.created_at,
            started_at=snapshot.started_at,
            finished_at=snapshot.finished_at,
            last_seq=len(events),
            trace_id=started.trace_id if started else None,
            snapshot_hash=exported.config_hash,
            metrics=metrics,
            replay_of=snapshot.replay_of,
        )
    except ValidationError as error:
        details = validation_details(error)
        raise _invalid(
            f"the exported run's metrics are not valid: {details[0]['message']}", errors=details
        ) from None
