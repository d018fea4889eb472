"""Run snapshots: what a run used and produced, as one schema-versioned, hashable document.

``SNAPSHOT_SCHEMA_VERSION`` history (one line per bump; readers refuse versions they do not know):
  1 — run, mode, profile chain, tools with schema hashes, prompt template and its hash, options,
      masked environment, input, output, metrics, agentstage version and git commit.
  2 — chain entries resolved (model, effective parameters, native tool calls), retry policy, tools
      with description and argument schema, every prompt template of the mode, whether the code's
      tree was dirty, the git commit of the working directory, and ``replay_of``.
  3 — tools with the router's ``keywords`` (which questions call for them), so a replay routes a
      question to the same tools even where a tool is no longer installed.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentstage import __version__
from agentstage.core.limits import RunLimits
from agentstage.core.orchestrators import AgentContext
from agentstage.core.prompts import PromptLibrary
from agentstage.core.records import RunRecord
from agentstage.errors import InvalidInputError
from agentstage.observability.masking import mask, masked_environment
from agentstage.runtime.catalog import schema_hash
from agentstage.settings import Settings

SNAPSHOT_SCHEMA_VERSION = 3
SNAPSHOT_VERSIONS: dict[int, str] = {
    1: "run, mode, profile chain, tools, prompt, options, environment, input, output, metrics, code version",
    2: "resolved chain entries, retry policy, tool schemas, all prompt templates of the mode, "
    "dirty flag, working-directory commit, replay_of",
    3: "tools with the router's keywords",
}


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def snapshot_hash(snapshot: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(snapshot).encode()).hexdigest()


def check_version(snapshot: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a snapshot only if this version of agentstage knows how to read it."""
    version = snapshot.get("schema_version")
    if isinstance(version, bool) or version not in SNAPSHOT_VERSIONS:
        known = ", ".join(str(v) for v in SNAPSHOT_VERSIONS)
        newer = (
            isinstance(version, int) and not isinstance(version, bool) and version > SNAPSHOT_SCHEMA_VERSION
        )
        hint = "; it was written by a newer agentstage, upgrade to read it" if newer else ""
        raise InvalidInputError(
            f"snapshot schema version {version!r} is not supported (this agentstage reads: {known}){hint}",
            code="snapshot_version_unsupported",
        )
    return snapshot


# code and working tree ----------------------------------------------------------------------------


@functools.cache
def code_version() -> dict[str, Any]:
    """The agentstage version and, when it runs from a git checkout, its commit and whether the
    checkout had changes. Read once per process: the code a process runs does not change."""
    pinned = os.environ.get("AGENT_GIT_COMMIT")
    if pinned:
        return {"agentstage": __version__, "git_commit": pinned, "git_dirty": None}
    here = Path(__file__).resolve().parent
    installed = {"site-packages", "dist-packages"} & set(here.parts)
    state = None if installed else git_state(str(here))
    return {
        "agentstage": __version__,
        "git_commit": state[0] if state else None,
        "git_dirty": state[1] if state else None,
    }


def working_tree() -> dict[str, Any] | None:
    """The git commit of the directory the agent runs from (and whether it has changes), or None
    outside a git checkout. Read once per directory and process."""
    try:
        directory = os.getcwd()
    except OSError:
        return None
    state = git_state(directory)
    return {"git_commit": state[0], "git_dirty": state[1]} if state else None


@functools.cache
def git_state(directory: str) -> tuple[str, bool] | None:
    """(commit, has uncommitted changes to tracked files) of the checkout holding ``directory``."""
    try:
        done = subprocess.run(
            ["git", "-C", directory, "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    commit = None
    dirty = False
    for line in done.stdout.splitlines():
        if line.startswith("# branch.oid "):
            commit = line.removeprefix("# branch.oid ").strip()
        elif line and not line.startswith("#"):
            dirty = True
    if commit is None or len(commit) != 40:
        return None
    return commit, dirty


# prompts --------------------------------------------------------------------------------------------

_TEMPLATE_NAMES: dict[tuple[tuple[Path, ...], str], tuple[str, ...]] = {}


def prompt_files(prompts: PromptLibrary, template: str) -> dict[str, str]:
    """Every template in the folder of the mode's main template (a planner renders three), with
    the hash of the text each run would use (the user's directory first)."""
    folder = template.rpartition("/")[0]
    key = (tuple(prompts.directories), folder)
    names = _TEMPLATE_NAMES.get(key)
    if names is None:
        found = {template}
        for directory in prompts.directories:
            base = directory / folder
            if base.is_dir():
                found |= {f"{folder}/{p.name}" if folder else p.name for p in base.glob("*.j2")}
        names = _TEMPLATE_NAMES[key] = tuple(sorted(found))
    return {name: prompts.source_hash(name) for name in names}


# the configuration half ---------------------------------------------------------------------------


def configuration(
    settings: Settings,
    profile_name: str,
    context: AgentContext,
    template: str,
    limits: RunLimits,
    prompts: PromptLibrary,
) -> dict[str, Any]:
    """The configuration half of a run's snapshot: the same for every run of a profile."""
    profile = settings.profile(profile_name)
    built = list(getattr(context.model, "chain", None) or [context.model])
    if len(built) != len(profile.chain):
        built = [context.model] * len(profile.chain)
    chain = []
    for entry, model in zip(profile.chain, built, strict=True):
        provider = settings.providers[entry.provider]
        chain.append(
            {
                "provider": entry.provider,
                "type": provider.type,
                "model": entry.model or model.model_name,
                "params": {**entry.params, **context.params},
                "native_tools": bool(getattr(model, "native_tools", False)),
                "options": mask(provider.options()),
            }
        )
    return {
        "schema_version": SNAPSHOT_SCHEMA_VERSION,
        "profile": {
            "name": profile_name,
            "chain": chain,
            "params": context.params,
            "limits": limits.model_dump(),
            "native_tools": bool(context.model.native_tools),
            "retry": settings.retry.model_dump(),
        },
        "tools": [
            {
                "id": f"{t.name}:{t.version}",
                "schema_hash": schema_hash(t),
                "category": t.category,
                "description": t.description,
                "parameters": t.parameters,
                "keywords": sorted({str(k).lower() for k in getattr(t, "keywords", ())}),
            }
            for t in context.tools
        ],
        "prompt": {
            "template": template,
            "hash": prompts.source_hash(template),
            "files": prompt_files(prompts, template),
        },
        "environment": masked_environment(os.environ, settings.environment_allowlist),
        "code": code_version(),
        "working_tree": working_tree(),
    }


# the whole document ---------------------------------------------------------------------------------

RUN_FIELDS = ("run_id", "created_at", "started_at", "finished_at", "mode", "options", "input",
              "history_messages", "conversation_id", "output", "status", "metrics", "replay_of")  # fmt: skip


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
        replay_of=record.replay_of,
    )
    return document


def split(document: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration half of a whole snapshot (what is stored once, by hash)."""
    return {key: value for key, value in document.items() if key not in RUN_FIELDS}
