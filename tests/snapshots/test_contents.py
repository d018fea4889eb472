"""What a snapshot records: every field ARCHITECTURE.md lists, resolved, and secrets masked."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from agentstage import __version__
from agentstage.runtime.catalog import schema_hash
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.snapshot import SNAPSHOT_SCHEMA_VERSION, SNAPSHOT_VERSIONS
from agentstage.runtime.wiring import build_service
from conftest import AGENT, Cli

from .conftest import ANSWER, QUESTION, REACT, sales_db, settings_for

pytestmark = pytest.mark.anyio


async def test_a_snapshot_records_the_resolved_configuration_and_the_outcome(
    home: Path, tmp_path: Path
) -> None:
    settings = settings_for(
        home,
        REACT,
        sales_db(tmp_path / "s.db", 3),
        providers={"backup": {"type": "scripted", "script": {"responses": [{"text": "spare"}]}}},
        profiles={
            "t": {
                "chain": [
                    {"provider": "s", "params": {"top_p": 0.5}},
                    {"provider": "backup", "model": "spare-1"},
                ],
                "params": {"temperature": 0.2},
                "limits": {"max_steps": 5},
            }
        },
    )
    async with build_service(settings) as service:
        record = await service.run(
            RunRequest.parse({"input": QUESTION, "mode": "react", "options": {"params": {"seed": 7}}})
        )
        snapshot = await service.snapshots.show(record.id)
        tools = {f"{t.name}:{t.version}": t for t in service.catalog.list_tools()}
    assert (
        snapshot["schema_version"] == SNAPSHOT_SCHEMA_VERSION and SNAPSHOT_SCHEMA_VERSION in SNAPSHOT_VERSIONS
    )
    assert snapshot["run_id"] == record.id and snapshot["created_at"] and snapshot["finished_at"]
    assert snapshot["mode"] == {"requested": "react", "resolved": "react", "reason": "requested"}
    profile = snapshot["profile"]
    assert profile["params"] == {"temperature": 0.2, "seed": 7} and profile["limits"]["max_steps"] == 5
    primary, backup = profile["chain"]
    assert (primary["provider"], primary["type"], primary["model"]) == ("s", "scripted", "scripted-model")
    assert (
        primary["params"] == {"top_p": 0.5, "temperature": 0.2, "seed": 7} and primary["native_tools"] is True
    )
    assert (backup["provider"], backup["model"]) == ("backup", "spare-1")  # its own model, not the primary's
    assert profile["retry"]["max_attempts"] >= 1
    for tool in snapshot["tools"]:
        installed = tools[tool["id"]]
        assert tool["schema_hash"] == schema_hash(installed) and tool["parameters"] == installed.parameters
        assert tool["description"] == installed.description
    assert snapshot["prompt"]["template"] == "react/agent-react.j2"
    assert snapshot["prompt"]["files"] == {"react/agent-react.j2": snapshot["prompt"]["hash"]}
    assert snapshot["code"]["agentstage"] == __version__
    assert (
        snapshot["input"] == QUESTION and snapshot["output"] == ANSWER and snapshot["status"] == "completed"
    )
    metrics = snapshot["metrics"]
    assert metrics["usage"]["total_tokens"] == 40 + 9 + 60 + 6 + 80 + 12 and metrics["cost"] == 0.0
    assert metrics["tool_calls"] == 2 and metrics["model_calls"] == 3 and metrics["latency_ms"] > 0
    assert snapshot["replay_of"] is None


async def test_a_planner_snapshot_names_every_template_it_renders(home: Path, tmp_path: Path) -> None:
    plan = {
        "responses": [{"json": {"steps": [{"description": "say it"}]}}, {"text": "said"}, {"text": "done"}]
    }
    async with build_service(settings_for(home, plan, sales_db(tmp_path / "s.db", 1))) as service:
        record = await service.run(RunRequest(input="plan something", mode="planner"))
        snapshot = await service.snapshots.show(record.id)
    assert set(snapshot["prompt"]["files"]) == {"plan/agent-plan.j2", "plan/step.j2", "plan/synthesize.j2"}


def stored_snapshot(home: Path, run_id: str) -> dict[str, object]:
    """The configuration half the run names, straight from the store file."""
    with sqlite3.connect(home / "agentstage.db") as connection:
        row = connection.execute(
            "SELECT s.body FROM runs r JOIN snapshots s ON s.hash = r.snapshot_hash WHERE r.id = ?", (run_id,)
        ).fetchone()
    connection.close()
    body: dict[str, object] = json.loads(row[0])
    return body


@pytest.mark.sqlite_only  # reads the SQLite file itself
def test_the_working_directory_commit_is_recorded(cli: Cli, tmp_path: Path) -> None:
    """The agent runs from a project in git: its commit (and whether it had changes) is recorded."""
    project = tmp_path / "project"
    project.mkdir()
    git = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    (project / "notes.txt").write_text("v1\n", encoding="utf-8")
    for command in (["init", "-q"], ["add", "notes.txt"], ["commit", "-q", "-m", "first"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    cli.script({"responses": [{"text": "Hi."}]})

    def run_in_project() -> dict[str, object]:
        done = subprocess.run([AGENT, "run", "--mode", "chat", "--output", "json", "hi"], cwd=project, env=cli.env,
                              capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        return stored_snapshot(cli.home, json.loads(done.stdout)["run_id"])

    clean = run_in_project()
    (project / "notes.txt").write_text("v2\n", encoding="utf-8")
    dirty = run_in_project()
    assert clean["working_tree"] == {"git_commit": head, "git_dirty": False}
    assert dirty["working_tree"] == {"git_commit": head, "git_dirty": True}
    outside = subprocess.run([AGENT, "run", "--mode", "chat", "--output", "json", "hi"], cwd=cli.home, env=cli.env,
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    assert stored_snapshot(cli.home, json.loads(outside.stdout)["run_id"])["working_tree"] is None


def test_a_pinned_code_commit_is_recorded() -> None:
    """An installed copy has no checkout to ask: AGENT_GIT_COMMIT names the commit it was built from."""
    environment = dict(os.environ, AGENT_GIT_COMMIT="0123456789abcdef0123456789abcdef01234567")
    script = (
        "import json\n"
        "from agentstage.runtime.snapshot import code_version\n"
        "print(json.dumps(code_version()))\n"
    )
    done = subprocess.run([Path(AGENT).parent / "python", "-c", script], env=environment, capture_output=True,
                          text=True, check=True, timeout=60)  # fmt: skip
    assert json.loads(done.stdout) == {
        "agentstage": __version__,
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "git_dirty": None,
    }
