"""``agent`` in pipes and on a terminal: stdin joins the question, piped output is never wrapped,
ids are never cut, and a run can be found by a prefix of its id, by ``last`` or by its text."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from conftest import AGENT, Cli

LONG = " ".join(f"word{i}" for i in range(60))
SCRIPT = {
    "rules": [
        {"match": "summarize", "text": "A summary."},
        {"match": "long", "text": LONG},
        {"match": "kiwi", "text": "Kiwis are birds."},
    ],
    "responses": [{"text": "Echo."}],
}


def run_json(cli: Cli, *args: str, stdin: str | None = None) -> dict[str, object]:
    done = cli("run", *args, "--mode", "chat", "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert isinstance(body, dict)
    return body


def model_input(cli: Cli, run_id: str) -> str:
    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    request = next(e for e in shown["events"] if e["type"] == "model.request")
    return str(request["data"]["messages"][-1]["content"])


def test_piped_stdin_is_the_question(cli: Cli) -> None:
    cli.script(SCRIPT)
    body = run_json(cli, stdin="summarize this please\n")
    assert body["output"] == "A summary."
    assert model_input(cli, str(body["run_id"])) == "summarize this please"


def test_piped_stdin_joins_the_question_prompt_first(cli: Cli) -> None:
    cli.script(SCRIPT)
    body = run_json(cli, "summarize", stdin="line one\nline two\n")
    assert model_input(cli, str(body["run_id"])) == "summarize\n\nline one\nline two"


def test_dash_reads_the_question_from_stdin(cli: Cli, tmp_path: Path) -> None:
    cli.script(SCRIPT)
    body = run_json(cli, "-", stdin="tell me about kiwi")
    assert body["output"] == "Kiwis are birds."
    assert model_input(cli, str(body["run_id"])) == "tell me about kiwi"
    notes = tmp_path / "notes.txt"
    notes.write_text("from the file", encoding="utf-8")
    body = run_json(cli, "summarize", "--input-file", str(notes))
    assert model_input(cli, str(body["run_id"])) == "summarize\n\nfrom the file"


def test_empty_piped_stdin_with_no_question_is_a_usage_error(cli: Cli) -> None:
    cli.script(SCRIPT)
    done = cli("run", stdin="")
    assert done.returncode == 2 and done.stdout == ""
    assert [line for line in done.stderr.splitlines() if line] == [
        'error: give a question, e.g. agent run "Summarize the sales data", pipe one in, or use --input-file FILE'
    ]


def on_terminal(cli: Cli, *args: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``agent`` with stdin, stdout and stderr on a pseudo-terminal, as a user at a shell does."""
    controller, terminal = pty.openpty()
    env = {**cli.env, "COLUMNS": "80", "LINES": "24", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [AGENT, *args], stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        return process.wait(timeout=max(1.0, deadline - time.monotonic())), output.decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)


def test_on_a_terminal_stdin_is_not_waited_for(cli: Cli) -> None:
    cli.script(SCRIPT)
    code, output = on_terminal(cli, "run", "tell me about kiwi", "--mode", "chat", timeout=60)
    assert code == 0, output
    assert "Kiwis are birds." in output and "completed" in output
    listed = [json.loads(line) for line in cli("runs", "list", "--json").stdout.splitlines()]
    assert [row["input"] for row in listed] == ["tell me about kiwi"]


def test_nothing_is_wrapped_when_piped(cli: Cli) -> None:
    cli.script(SCRIPT)
    cli.env.pop("COLUMNS")  # no width hint at all: piped output must still keep its lines whole
    done = cli("run", "a long answer please", "--mode", "chat")
    assert done.returncode == 0, done.stderr
    assert done.stdout == LONG + "\n"
    summary = done.stderr.splitlines()[-1]
    assert summary.startswith("completed · run ") and summary.endswith("s") and len(summary) > 80
    done = cli("runs", "show", "last")
    output_line = next(line for line in done.stdout.splitlines() if line.startswith("output: "))
    assert output_line == f"output: {LONG}"


def test_runs_list_never_cuts_ids_or_statuses(cli: Cli) -> None:
    cli.script(SCRIPT)
    ids = [str(run_json(cli, f"{LONG} number {n}")["run_id"]) for n in range(2)]
    cli.env["COLUMNS"] = "60"
    listing = cli("runs", "list").stdout.splitlines()
    assert listing[0].split() == ["run", "status", "mode", "profile", "tokens", "cost", "created", "input"]
    rows = [line.split() for line in listing[1:]]
    assert [row[0] for row in rows] == ids[::-1]
    assert {row[1] for row in rows} == {"completed"}
    assert all(line.endswith(f"number {n}") for line, n in zip(listing[1:], (1, 0), strict=True))
    code, output = on_terminal(cli, "runs", "list")  # 80 columns: fewer columns, a shorter input, whole ids
    assert code == 0, output
    lines = [line.rstrip() for line in output.splitlines() if "completed" in line]
    assert len(lines) == 2 and all(len(line) <= 80 and line.endswith("…") for line in lines), output
    assert [line.split()[:2] for line in lines] == [[ids[1], "completed"], [ids[0], "completed"]]


def test_runs_show_takes_a_unique_prefix_or_last(cli: Cli) -> None:
    cli.script(SCRIPT)
    first = str(run_json(cli, "first question")["run_id"])
    second = str(run_json(cli, "second question")["run_id"])
    assert json.loads(cli("runs", "show", "last", "--json").stdout)["run_id"] == second
    shared = first[: next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)]
    unique = first[: len(shared) + 1]
    assert json.loads(cli("runs", "show", unique, "--json").stdout)["run_id"] == first
    assert json.loads(cli("runs", "show", unique.upper(), "--json").stdout)["run_id"] == first
    done = cli("runs", "show", shared)
    assert done.returncode == 2 and done.stdout == ""
    line = done.stderr.strip()
    assert "\n" not in line and "matches several runs" in line and first in line and second in line
    done = cli("runs", "show", "zzzz")
    assert done.returncode == 2 and done.stderr.strip() == "error: unknown run 'zzzz'"


def test_runs_show_merges_streamed_text_and_events_gives_the_raw_log(cli: Cli) -> None:
    cli.script(SCRIPT)
    run_id = str(run_json(cli, "a long answer please")["run_id"])
    shown = cli("runs", "show", run_id).stdout.splitlines()
    merged = [line for line in shown if " message " in line]
    assert len(merged) == 1 and "(60 chunks)" in merged[0] and json.dumps(LONG) in merged[0]
    assert not any("message.delta" in line for line in shown)
    raw = [json.loads(line) for line in cli("runs", "show", run_id, "--events").stdout.splitlines()]
    deltas = [e for e in raw if e["type"] == "message.delta"]
    assert len(deltas) == 60 and "".join(e["data"]["text"] for e in deltas) == LONG
    assert [e["seq"] for e in raw] == list(range(1, len(raw) + 1))


def test_runs_list_searches_inputs_and_outputs(cli: Cli) -> None:
    cli.script(SCRIPT)
    kiwi = str(run_json(cli, "what about kiwi?")["run_id"])
    plain = str(run_json(cli, "something else 100%_done")["run_id"])

    def found(text: str) -> list[str]:
        done = cli("runs", "list", "-q", text, "--json")
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["run_id"] for line in done.stdout.splitlines()]

    assert found("KIWI") == [kiwi]  # input, any case
    assert found("birds") == [kiwi]  # output
    assert found("Echo") == [plain]
    assert found("100%_") == [plain] and found("%") == [plain]  # LIKE wildcards are literal
    assert found("nowhere") == []
    assert "no runs match" in cli("runs", "list", "-q", "nowhere").stderr


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_runs_list_searches_encrypted_runs_too(cli: Cli, tmp_path: Path) -> None:
    from agentstage.store.crypto import generate_key

    key = tmp_path / "store.key"
    key.write_text(generate_key() + "\n", encoding="utf-8")
    cli.script(SCRIPT, store={"encryption_key": f"file:{key}"})
    kiwi = str(run_json(cli, "what about kiwi?")["run_id"])
    other = str(run_json(cli, "something else")["run_id"])
    stored = [
        cli.home / name for name in ("agentstage.db", "agentstage.db-wal") if (cli.home / name).exists()
    ]
    assert stored and not any(b"kiwi" in path.read_bytes() for path in stored)  # sealed: SQL cannot match it

    def found(*args: str) -> list[str]:
        done = cli("runs", "list", *args, "--json")
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["run_id"] for line in done.stdout.splitlines()]

    assert found("-q", "KIWI") == [kiwi] and found("-q", "birds") == [kiwi] and found("-q", "Echo") == [other]
    assert found("-q", "e", "--limit", "1") == [other] and found("-q", "e", "--offset", "1") == [kiwi]
