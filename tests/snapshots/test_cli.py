"""``agent snapshot`` and ``agent replay`` as a user runs them: the real executable, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import Cli

from .conftest import ANSWER, QUESTION, REACT, sales_db


def run(cli: Cli, *args: str) -> str:
    done = cli("run", "--output", "json", *args)
    assert done.returncode == 0, done.stderr
    run_id: str = json.loads(done.stdout)["run_id"]
    return run_id


def test_show_export_import_and_replay_elsewhere(cli: Cli, tmp_path: Path) -> None:
    cli.script(REACT, tools={"sql_database": str(sales_db(tmp_path / "s.db", 3))})
    run_id = run(cli, "--mode", "react", QUESTION)

    shown = cli("snapshot", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    for words in (run_id, "completed", "scripted", "math.calculate:v1", "sql.query:v1", "react/agent-react.j2",
                  "max_steps", "agentstage", "2 tool calls", ANSWER[:30]):  # fmt: skip
        assert words in shown.stdout, (words, shown.stdout)
    as_json = json.loads(cli("snapshot", "show", run_id, "--json").stdout)
    assert as_json["run_id"] == run_id and as_json["output"] == ANSWER

    target = tmp_path / "run.json"
    exported = cli("snapshot", "export", run_id, "-o", str(target))
    assert exported.returncode == 0 and f"exported run {run_id}" in exported.stderr
    document = json.loads(target.read_text(encoding="utf-8"))
    assert document["snapshot"] == as_json and document["events"][-1]["type"] == "run.completed"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = Cli(elsewhere)  # no scripted provider here: the embedded defaults only
    imported = other("snapshot", "import", str(target))
    assert imported.returncode == 0 and f"imported run {run_id} (completed" in imported.stdout, (
        imported.stderr
    )
    replayed = other("replay", run_id)
    assert replayed.returncode == 0, replayed.stderr
    assert ANSWER in replayed.stdout and f"replay of {run_id} reproduced it exactly" in replayed.stderr
    again = other("snapshot", "import", str(target))
    assert again.returncode == 2 and "already in this store" in again.stderr


def test_bad_input_is_one_red_line_and_nothing_is_written(cli: Cli, tmp_path: Path) -> None:
    cli.script({"responses": [{"text": "Hello."}]})
    run_id = run(cli, "--mode", "chat", "hi")

    override = cli("replay", run_id, "--model", "other")
    assert override.returncode == 2 and "add --live" in override.stderr
    unknown = cli("snapshot", "show", "nope")
    assert unknown.returncode == 2 and unknown.stderr.strip() == "error: unknown run 'nope'"
    missing = cli("snapshot", "import", str(tmp_path / "missing.json"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    nowhere = tmp_path / "no-such-dir" / "run.json"
    unwritable = cli("snapshot", "export", run_id, "-o", str(nowhere))
    assert (
        unwritable.returncode == 1 and "does not exist" in unwritable.stderr and not nowhere.parent.exists()
    )

    good = tmp_path / "good.json"
    assert cli("snapshot", "export", run_id, "-o", str(good)).returncode == 0
    edited = json.loads(good.read_text(encoding="utf-8"))
    edited["snapshot"]["input"] = "something else"
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(edited), encoding="utf-8")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    other = Cli(fresh)
    refused = other("snapshot", "import", str(bad))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "changed after it was exported" in refused.stderr
    assert other("runs", "list", "--json").stdout.strip() == ""


def test_a_replay_that_diverges_exits_1_and_names_the_step(cli: Cli, tmp_path: Path) -> None:
    cli.script({"responses": [{"text": "Hello."}]})
    run_id = run(cli, "--mode", "chat", "hi")
    changed = cli.home / "prompts" / "chat"
    changed.mkdir(parents=True)
    (changed / "system.j2").write_text("You are a pirate.", encoding="utf-8")
    replayed = cli("replay", run_id, "--json")
    assert replayed.returncode == 1
    result = json.loads(replayed.stdout)
    assert result["replay_of"] == run_id and result["status"] == "failed"
    assert result["error"]["code"] == "replay_diverged"
    assert result["error"]["message"].startswith(
        "replay diverged at step 1 (llm answer): the model request differs"
    )


PLUGIN = Path(__file__).parents[1] / "plugins" / "agentstage-echo"


def test_a_run_replays_after_its_plugin_tool_is_uninstalled(cli: Cli, tmp_path: Path) -> None:
    """A JSON-action react run calls a plugin's tool; the plugin is then removed. The replay takes
    the tool's schema and routing from the snapshot and its result from the log."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(PLUGIN)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    script = {
        "native_tools": False,
        "responses": [
            {"json": {"tool": "word_count", "arguments": {"text": "one two three"}}},
            {"json": {"tool": "math.calculate", "arguments": {"expression": "3 * 2"}}},
            {"json": {"answer": "Three words; doubled, six."}},
        ],
    }
    cli.script(script)
    cli.env["PYTHONPATH"] = str(site)
    run_id = run(cli, "--mode", "react", "count the words in 'one two three' and double it")
    del cli.env["PYTHONPATH"]
    assert "word_count" not in cli("tool", "list").stdout  # gone

    replayed = cli("replay", "last")  # 'last' and id prefixes work like `agent runs show`
    assert replayed.returncode == 0, replayed.stderr
    assert "Three words; doubled, six." in replayed.stdout
    assert f"replay of {run_id} reproduced it exactly" in replayed.stderr
    assert "word_count:v1" in replayed.stdout + replayed.stderr
    traced = cli("trace", "show", run_id[:13])
    assert traced.returncode == 0 and "execute_tool word_count" in traced.stdout, traced.stderr
    shown = cli("snapshot", "show", run_id[:13], "--json")
    assert json.loads(shown.stdout)["run_id"] == run_id
