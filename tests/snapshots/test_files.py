"""Export and import: a run travels as one self-checking file; every bad file is refused whole."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from agentstage.errors import AgentstageError, ConflictError, InvalidInputError
from agentstage.providers.registry import check_provider
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.snapshot import SNAPSHOT_SCHEMA_VERSION, snapshot_hash
from agentstage.runtime.snapshot_file import content_hash
from agentstage.runtime.wiring import build_service
from agentstage.types import RunStatus
from conftest import make_settings

from .conftest import ANSWER, QUESTION, REACT, sales_db, settings_for, types

pytestmark = pytest.mark.anyio


@pytest.fixture
async def exported(home: Path, tmp_path: Path) -> dict[str, Any]:
    async with build_service(settings_for(home, REACT, sales_db(tmp_path / "s.db", 3))) as service:
        original = await service.run(RunRequest(input=QUESTION, mode="react"))
        document: dict[str, Any] = await service.snapshots.export(original.id)
    assert original.status == RunStatus.COMPLETED
    return document


def fresh_home(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


async def test_a_run_exported_here_is_the_same_run_imported_there(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    assert exported["schema_version"] == SNAPSHOT_SCHEMA_VERSION
    assert exported["snapshot_hash"] == snapshot_hash(exported["snapshot"]) and exported[
        "hash"
    ] == content_hash(exported)
    run_id = exported["snapshot"]["run_id"]
    elsewhere = fresh_home(tmp_path, "elsewhere")  # the embedded defaults: no scripted provider at all
    async with build_service(make_settings(elsewhere, {})) as service:
        record = await service.snapshots.import_run(json.dumps(exported, indent=2))
        shown = await service.snapshots.show(run_id)
        again = await service.snapshots.export(run_id)
        replayed = await service.wait((await service.replay(run_id)).id)
        events = await service.events(replayed.id)
    assert record.id == run_id and record.status == RunStatus.COMPLETED and record.output == ANSWER
    assert shown == exported["snapshot"]
    assert again["snapshot_hash"] == exported["snapshot_hash"] and again["events"] == exported["events"]
    assert replayed.output == ANSWER and types(events) == [e["type"] for e in exported["events"]]


def tampered(document: dict[str, Any]) -> str:
    changed = json.loads(json.dumps(document))
    changed["snapshot"]["output"] = "Something the run never said."
    return json.dumps(changed)


def newer(document: dict[str, Any]) -> str:
    changed = json.loads(json.dumps(document))
    changed["schema_version"] = changed["snapshot"]["schema_version"] = SNAPSHOT_SCHEMA_VERSION + 1
    changed["hash"] = content_hash(changed)
    return json.dumps(changed)


def resealed(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], str]:
    """An edit made by someone who also recomputed the hash: caught by the content checks."""

    def make(document: dict[str, Any]) -> str:
        changed = json.loads(json.dumps(document))
        edit(changed)
        changed["snapshot_hash"] = snapshot_hash(changed["snapshot"])
        changed["hash"] = content_hash(changed)
        return json.dumps(changed)

    return make


def drop_event(document: dict[str, Any]) -> None:
    del document["events"][3]


def other_run(document: dict[str, Any]) -> None:
    document["events"][2]["run_id"] = "01234567-89ab-7def-8123-456789abcdef"


def wrong_ending(document: dict[str, Any]) -> None:
    document["snapshot"]["status"] = "failed"


def other_config(document: dict[str, Any]) -> None:
    document["snapshot"]["profile"]["params"] = {"temperature": 1.5}


BAD_FILES: list[tuple[str, Callable[[dict[str, Any]], str], str, str]] = [
    ("not JSON", lambda d: '{"format": "agentstage.run-export", ', "snapshot_not_json", "not JSON"),
    ("NaN", lambda d: json.dumps(d).replace('"cost": 0.0', '"cost": NaN', 1), "snapshot_not_json", "NaN"),
    ("a list", lambda d: "[1, 2, 3]", "snapshot_invalid", "JSON list"),
    (
        "another format",
        lambda d: json.dumps({"hello": "world"}),
        "snapshot_invalid",
        "not an agentstage run export",
    ),
    ("edited by hand", tampered, "snapshot_tampered", "changed after it was exported"),
    ("newer schema", newer, "snapshot_version_unsupported", "newer agentstage"),
    ("a gap in the log", resealed(drop_event), "snapshot_invalid", "without gaps"),
    ("another run's event", resealed(other_run), "snapshot_invalid", "belongs to run"),
    ("a log that ends otherwise", resealed(wrong_ending), "snapshot_invalid", "ends with 'run.completed'"),
    ("a configuration of another run", resealed(other_config), "snapshot_invalid", "does not match the hash"),
]


@pytest.mark.parametrize(("label", "make", "code", "words"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
async def test_a_bad_file_is_refused_with_nothing_written(
    exported: dict[str, Any],
    tmp_path: Path,
    label: str,
    make: Callable[[dict[str, Any]], str],
    code: str,
    words: str,
) -> None:
    target = fresh_home(tmp_path, "target")
    async with build_service(make_settings(target, {})) as service:
        with pytest.raises(InvalidInputError) as refused:
            await service.snapshots.import_run(make(exported))
        assert await service.count_runs() == 0
        async with service.store.engine.connect() as connection:  # type: ignore[attr-defined]
            for table in ("snapshots", "run_events"):
                counted = await connection.execute(text(f"SELECT count(*) FROM {table}"))
                assert counted.scalar_one() == 0, table
    assert refused.value.code == code, refused.value.message
    assert words in refused.value.message, refused.value.message


async def test_importing_a_run_twice_is_refused(exported: dict[str, Any], home: Path) -> None:
    async with build_service(make_settings(home, {})) as service:
        with pytest.raises(ConflictError) as twice:
            await service.snapshots.import_run(json.dumps(exported))
    assert twice.value.code == "run_exists"


@pytest.mark.sqlite_only  # edits the SQLite file itself
async def test_a_stored_snapshot_of_an_unknown_version_is_refused(
    exported: dict[str, Any], home: Path
) -> None:
    run_id = exported["snapshot"]["run_id"]
    with sqlite3.connect(home / "agentstage.db") as connection:
        connection.execute("UPDATE snapshots SET body = json_set(body, '$.schema_version', 7)")
    connection.close()
    async with build_service(make_settings(home, {})) as service:
        with pytest.raises(AgentstageError) as refused:
            await service.snapshots.show(run_id)
    assert refused.value.code == "snapshot_version_unsupported"
    assert "version 7 is not supported" in refused.value.message


async def test_the_replay_provider_answers_from_an_exported_file(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    """Configured as a provider, ``replay`` plays an exported run's model answers back."""
    recording = tmp_path / "run.json"
    recording.write_text(json.dumps(exported), encoding="utf-8")
    target = fresh_home(tmp_path, "offline")
    config = {
        "providers": {"rec": {"type": "replay", "recording": str(recording)}},
        "profiles": {"recorded": {"chain": [{"provider": "rec"}]}},
        "default_profile": "recorded",
        "tools": {"sql_database": str(sales_db(tmp_path / "same.db", 3))},
    }
    async with build_service(make_settings(target, config)) as service:
        record = await service.run(RunRequest(input=QUESTION, mode="react"))
    assert record.status == RunStatus.COMPLETED and record.output == ANSWER, record.error_message
    assert "needs a 'recording'" in str(check_provider("replay", {}))
    assert "cannot read recording" in str(
        check_provider("replay", {"recording": str(tmp_path / "gone.json")})
    )
