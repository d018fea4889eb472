"""Run snapshots: what a run used and produced, as one schema-versioned, hashable document.

``SNAPSHOT_SCHEMA_VERSION`` history (one line per bump; readers refuse versions they do not know):
  1 — run id, timestamps, mode, resolved profile chain, tools with schema hashes, prompt template
      and its hash, options, masked environment, input, output, metrics, agentstage version, git commit.

The identity of a snapshot is the SHA-256 of its canonical JSON (sorted keys, no spaces), so two
runs with the same configuration and results hash the same whatever door they came through.
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
