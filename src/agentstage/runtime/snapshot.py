"""Run snapshots: what a run used and produced, as one schema-versioned, hashable document.

``SNAPSHOT_SCHEMA_VERSION`` history (one line per bump; readers refuse versions they do not know):
  1 — run id, timestamps, mode, resolved profile chain, tools with schema hashes, prompt template
      and its hash, options, masked environment, input, output, metrics, agentstage version, git commit.

A snapshot has two halves. The configuration (profile chain, parameters, limits, tools, prompt,
environment, code version) is the same for every run of a profile, so it is stored once, under the
hash of its canonical JSON, and each run names that hash. The run's own facts (id, timestamps, mode,
input, output, metrics) live in the run's record. :func:`assemble` joins them into the whole
document, whose identity is again the SHA-256 of its canonical JSON (sorted keys, no spaces).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from agentstage import __version__
from agentstage.core.records import RunRecord
from agentstage.errors import InvalidInputError

SNAPSHOT_SCHEMA_VERSION = 1
SNAPSHOT_VERSIONS: dict[int, str] = {
    1: "run, mode, profile chain, tools, prompt, options, environment, input, output, metrics, code version",
}


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def snapshot_hash(snapshot: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(snapshot).encode()).hexdigest()


def check_version(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Accept a stored snapshot only if this version of agentstage knows how to read it."""
    version = snapshot.get("schema_version")
    if version not in SNAPSHOT_VERSIONS:
        known = ", ".join(str(v) for v in SNAPSHOT_VERSIONS)
        raise InvalidInputError(
            f"snapshot schema version {version!r} is not supported (this agentstage reads: {known})",
            code="snapshot_version_unsupported",
        )
    return snapshot


@functools.cache
def code_version() -> dict[str, str | None]:
    """The agentstage version and, when running from a git checkout, its commit."""
    return {"agentstage": __version__, "git_commit": _git_commit(Path(__file__).resolve().parent)}


def _git_commit(directory: Path) -> str | None:
    if os.environ.get("AGENT_GIT_COMMIT"):
        return os.environ["AGENT_GIT_COMMIT"]
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


RUN_FIELDS = ("run_id", "created_at", "started_at", "finished_at", "mode", "options", "input",
              "history_messages", "conversation_id", "output", "status", "metrics")  # fmt: skip


def assemble(config: dict[str, Any], record: RunRecord, *, mode_reason: str | None = None) -> dict[str, Any]:
    """The whole snapshot of a run: its stored configuration joined with the record's own facts."""
    metrics = dict(record.metrics)
    history = metrics.pop("history_messages", 0)
    document = dict(config)
    document.update(
        run_id=record.id,
        created_at=record.created_at.isoformat(),
        started_at=record.started_at.isoformat() if record.started_at else None,
        finished_at=record.finished_at.isoformat() if record.finished_at else None,
        mode={"requested": record.mode, "resolved": record.resolved_mode, "reason": mode_reason},
        options=record.options,
        input=record.input,
        history_messages=history,
        conversation_id=record.conversation_id,
        output=record.output,
        status=record.status.value if record.status.terminal else None,
        metrics={"usage": record.usage, "cost": record.cost, **metrics} if record.status.terminal else None,
    )
    return document
