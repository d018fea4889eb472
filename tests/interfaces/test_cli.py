"""The ``agent`` executable, run as a real subprocess with its own AGENT_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Cli

ANSWER = {"responses": [{"text": "Paris is the capital of France."}]}


def one_red_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_help_lists_every_command(cli: Cli) -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("run", "chat", "batch", "runs", "config", "profile", "tool"):
        assert command in done.stdout


def test_run_streams_the_answer_to_stdout_and_a_summary_to_stderr(cli: Cli) -> None:
    cli.script(ANSWER)
    done = cli("run", "What is the capital of France?", "--mode", "chat")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Paris is the capital of France.\n"
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("completed · run ") and "tokens" in summary and "$0.000000" in summary


def test_run_json_prints_one_object_in_the_http_shape(cli: Cli) -> None:
    cli.script(ANSWER)
    done = cli("run", "capital?", "--mode", "chat", "--output", "json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert {"run_id", "status", "output", "usage", "cost", "timings"} <= body.keys()
    assert body["status"] == "completed" and body["output"] == "Paris is the capital of France."
    assert body["usage"]["total_tokens"] > 0 and body["timings"]["duration_ms"] is not None


def test_run_no_stream_and_output_file(cli: Cli, tmp_path: Path) -> None:
    cli.script(ANSWER)
    target = tmp_path / "answer.md"
    done = cli(
        "run",
        "capital?",
        "--mode",
        "chat",
        "--no-stream",
        "--format",
        "markdown",
        "--output-file",
        str(target),
    )
    assert done.returncode == 0, done.stderr
    written = target.read_text(encoding="utf-8")
    assert written.startswith("Paris is the capital of France.") and "completed · run" in written


def test_run_reads_the_question_from_a_file(cli: Cli, tmp_path: Path) -> None:
    cli.script({"rules": [{"match": "from a file", "text": "Read it."}], "responses": [{"text": "wrong"}]})
    question = tmp_path / "q.txt"
    question.write_text("A question from a file.", encoding="utf-8")
    done = cli("run", "--input-file", str(question), "--mode", "chat")
    assert done.returncode == 0 and done.stdout.strip() == "Read it."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", ""], "the input is empty"),
        (["run", "   "], "the input is empty"),
        (["run", "hi", "--mode", "telepathy"], "unknown mode 'telepathy'"),
        (["run", "hi", "--profile", "nope"], "unknown profile 'nope'"),
        (["run", "--input-file", "/no/such/file.txt"], "does not exist"),
        (["run"], "give a question"),
        (["tool", "test", "math.calculate", "--input", "{not json"], "--input is not valid JSON"),
        (["tool", "test", "math.calculate", "--input", '{"expression": 5}'], "expression"),
        (["tool", "test", "no.such.tool", "--input", "{}"], "unknown tool 'no.such.tool'"),
        (["runs", "show", "nope"], "unknown run 'nope'"),
        (["runs", "list", "--status", "sleeping"], "unknown status 'sleeping'"),
    ],
)
def test_usage_errors_are_one_red_line_and_exit_2(cli: Cli, args: list[str], message: str) -> None:
    cli.script(ANSWER)
    done = cli(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in one_red_line(done.stderr)
    assert done.stdout == ""


def test_an_unreadable_input_file_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    cli.script(ANSWER)
    binary = tmp_path / "image.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    done = cli("run", "--input-file", str(binary))
    assert done.returncode == 2 and "not UTF-8" in one_red_line(done.stderr)
    done = cli("run", "--input-file", str(tmp_path))
    assert done.returncode == 2 and "is a directory" in one_red_line(done.stderr)


def test_an_argument_the_locale_could_not_decode_is_a_usage_error(cli: Cli) -> None:
    """Bytes that are not UTF-8 reach the program as lone surrogates; no store or model takes them."""
    cli.script(ANSWER)
    for args in (
        ["run", "caf\udce9 au lait"],
        ["runs", "show", "\udce9"],
        ["run", "hi", "--profile", "\udcff"],
    ):
        done = cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        line = one_red_line(done.stderr)
        assert "is not UTF-8 text" in line and ("\\xe9" in line or "\\xff" in line), line
        assert done.stdout == ""
    listed = cli("runs", "list", "--json")  # one object per run: nothing was started
    assert listed.returncode == 0 and listed.stdout.strip() == "", listed


def test_an_invalid_config_is_refused_with_the_key(cli: Cli) -> None:
    cli.configure({"runtime": {"max_concurrent_runs": 0}})
    done = cli("run", "hi")
    assert done.returncode == 2
    assert "runtime.max_concurrent_runs" in one_red_line(done.stderr)


def test_a_failed_run_exits_1_and_is_recorded(cli: Cli) -> None:
    cli.script({"responses": [{"error": {"code": "provider_unavailable", "message": "connection refused"}}]})
    done = cli("run", "hi", "--mode", "chat", "--output", "json")
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert body["status"] == "failed" and body["error"]["code"] == "provider_unavailable"
    shown = json.loads(cli("runs", "show", body["run_id"], "--json").stdout)
    assert shown["status"] == "failed" and shown["events"][-1]["type"] == "run.failed"


def test_runs_list_and_show(cli: Cli) -> None:
    cli.script(ANSWER)
    run_id = json.loads(cli("run", "first", "--mode", "chat", "--output", "json").stdout)["run_id"]
    cli("run", "second", "--mode", "chat")
    listed = [json.loads(line) for line in cli("runs", "list", "--json").stdout.splitlines()]
    assert [row["input"] for row in listed] == ["second", "first"]
    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert shown["run_id"] == run_id and shown["input"] == "first"
    assert [e["seq"] for e in shown["events"]] == list(range(1, len(shown["events"]) + 1))
    table = cli("runs", "show", run_id)
    assert table.returncode == 0 and "run.completed" in table.stdout


def test_batch_runs_every_line_in_order_and_reports_failures(cli: Cli, tmp_path: Path) -> None:
    cli.script(
        {
            "rules": [
                {"match": "broken", "error": {"code": "model_error", "message": "scripted failure"}},
                {"match": "slow", "text": "slow answer", "delay": 0.3},
            ],
            "responses": [{"text": "fast answer"}],
        }
    )
    queries = tmp_path / "queries.txt"
    queries.write_text("slow question\n\nbroken question\nfast question\n", encoding="utf-8")
    results_path = tmp_path / "results.json"
    done = cli(
        "batch", "--input", str(queries), "--output", str(results_path), "--parallel", "3", "--mode", "chat"
    )
    assert done.returncode == 1
    document = json.loads(results_path.read_text(encoding="utf-8"))
    results = document["results"]
    assert [r["line"] for r in results] == [1, 3, 4]
    assert [r["status"] for r in results] == ["completed", "failed", "completed"]
    assert results[0]["output"] == "slow answer" and results[2]["output"] == "fast answer"
    assert document["counts"] == {"completed": 2, "failed": 1}
    assert "line 3: failed (model_error)" in done.stderr


def test_config_show_masks_secrets(cli: Cli) -> None:
    cli.configure(
        {
            "providers": {
                "remote": {
                    "type": "openai",
                    "api_key": "sk-abcdefghijklmnopqrstuvwx",
                    "base_url": "http://u:pw123456@host/v1",
                }
            }
        }
    )
    done = cli("config", "show")
    assert done.returncode == 0, done.stderr
    assert "sk-abcdefghijklmnop" not in done.stdout and "pw123456" not in done.stdout
    config = json.loads(done.stdout)
    assert config["providers"]["remote"]["api_key"] == "***"
    assert config["providers"]["openai"]["api_key"] == "env:OPENAI_API_KEY"


def test_profile_list_and_tools(cli: Cli) -> None:
    cli.script(ANSWER)
    profiles = json.loads(cli("profile", "list", "--json").stdout)
    assert {p["name"] for p in profiles} >= {"local", "fast", "quality", "t"}
    assert next(p for p in profiles if p["default"])["name"] == "t"
    tools = json.loads(cli("tool", "list", "--json").stdout)
    assert {t["id"] for t in tools} >= {"math.calculate:v1", "sql.query:v1"}
    data_tools = json.loads(cli("tool", "list", "--category", "data", "--json").stdout)
    assert [t["id"] for t in data_tools] == ["sql.query:v1"]
    done = cli("tool", "test", "math.calculate", "--input", '{"expression": "5 * 3 + sqrt(16)"}')
    assert done.returncode == 0 and json.loads(done.stdout) == {"result": 19}
    done = cli("tool", "test", "sql.query:v1", "--input", '{"query": "SELECT count(*) FROM products"}')
    assert json.loads(done.stdout)["rows"] == [[10]]
    done = cli("tool", "test", "sql.query", "--input", '{"query": "DROP TABLE orders"}')
    assert done.returncode == 1 and "sql_not_read_only" in done.stderr


def test_chat_keeps_history_and_handles_commands(cli: Cli) -> None:
    cli.script(
        {
            "rules": [
                {"match": "name is Ada", "text": "Hello Ada."},
                {"match": "my name", "text": "You told me: Ada."},
            ]
        }
    )
    done = cli("chat", stdin="My name is Ada.\n/mode nonsense\n/mode chat\nWhat is my name?\n/exit\n")
    assert done.returncode == 0, done.stderr
    assert "Hello Ada." in done.stdout and "You told me: Ada." in done.stdout
    assert "unknown mode 'nonsense'" in done.stderr
    listed = [json.loads(line) for line in cli("runs", "list", "--json").stdout.splitlines()]
    assert len(listed) == 2
    second = json.loads(cli("runs", "show", listed[0]["run_id"], "--json").stdout)
    request = next(e for e in second["events"] if e["type"] == "model.request")
    assert "Hello Ada." in [m["content"] for m in request["data"]["messages"]]
