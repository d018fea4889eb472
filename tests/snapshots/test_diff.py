"""Diff: two runs of the same input that differ only in their profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service
from conftest import Cli

from .conftest import sales_db, settings_for, write_script

pytestmark = pytest.mark.anyio


def thinker(expression: str, answer: str) -> dict[str, Any]:
    return {
        "responses": [
            {
                "text": "I will calculate it. ",
                "tool_calls": [{"name": "math.calculate", "arguments": {"expression": expression}}],
            },
            {"text": answer},
        ]
    }


PROFILES = {
    "careful": {"chain": [{"provider": "a"}], "params": {"temperature": 0.0}},
    "quick": {"chain": [{"provider": "b", "model": "quick-model"}], "params": {"temperature": 0.9}},
}


def two_profiles(tmp_path: Path) -> dict[str, Any]:
    return {
        "providers": {
            "a": {
                "type": "scripted",
                "script": str(write_script(tmp_path / "a.json", thinker("17 * 23", "It is 391."))),
            },
            "b": {
                "type": "scripted",
                "script": str(write_script(tmp_path / "b.json", thinker("17 * 32", "It is 544."))),
            },
        },
        "profiles": PROFILES,
    }


async def test_runs_that_differ_only_in_profile_name_the_fields_and_the_first_diverging_event(
    home: Path, tmp_path: Path
) -> None:
    settings = settings_for(home, {"responses": []}, sales_db(tmp_path / "s.db", 1), **two_profiles(tmp_path))
    async with build_service(settings) as service:
        a = await service.run(RunRequest(input="What is 17 * 23?", mode="react", profile="careful"))
        b = await service.run(RunRequest(input="What is 17 * 23?", mode="react", profile="quick"))
        result = await service.snapshots.diff(a.id, b.id)
    fields = {change["field"]: change for change in result["config"]}
    assert fields["profile.name"]["a"] == "careful" and fields["profile.name"]["b"] == "quick"
    assert (
        fields["profile.params.temperature"]["a"] == 0.0 and fields["profile.params.temperature"]["b"] == 0.9
    )
    assert (
        fields["profile.chain[0].provider"]["a"] == "a"
        and fields["profile.chain[0].model"]["b"] == "quick-model"
    )
    assert "input" not in fields and not any(f.startswith(("tools", "prompt", "code")) for f in fields)
    divergence = result["first_divergence"]
    assert divergence["where"] == "step 1 (llm think 1)"
    assert divergence["a"]["type"] == divergence["b"]["type"] == "model.response"
    assert "17 * 23" in divergence["a"]["summary"] and "17 * 32" in divergence["b"]["summary"]
    assert divergence["a"]["seq"] == divergence["b"]["seq"]
    outcome = result["outcome"]
    assert (outcome["a"]["output"], outcome["b"]["output"]) == ("It is 391.", "It is 544.")
    for side in ("a", "b"):
        assert outcome[side]["tool_calls"] == 1 and outcome[side]["total_tokens"] > 0
        assert outcome[side]["latency_ms"] > 0 and outcome[side]["cost"] == 0.0


def test_the_cli_prints_the_diff_for_people_and_for_machines(cli: Cli, tmp_path: Path) -> None:
    cli.configure({**two_profiles(tmp_path), "default_profile": "careful"})
    runs = []
    for profile in ("careful", "quick"):
        done = cli("run", "--mode", "react", "--profile", profile, "--output", "json", "What is 17 * 23?")
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout)["run_id"])
    careful, quick = runs
    text = cli("snapshot", "diff", careful, quick)
    assert text.returncode == 0, text.stderr
    lines = text.stdout
    assert "profile.name" in lines and "careful" in lines and "quick" in lines
    assert "First divergence: step 1 (llm think 1)" in lines
    assert "17 * 23" in lines and "17 * 32" in lines and "It is 391." in lines and "It is 544." in lines
    machine = cli("snapshot", "diff", careful, quick, "--json")
    parsed = json.loads(machine.stdout)
    assert parsed["a"] == careful and parsed["first_divergence"]["step"]["kind"] == "llm"
    missing = cli("snapshot", "diff", careful, "01234567-89ab-7def-8123-456789abcdef")
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: unknown run")
