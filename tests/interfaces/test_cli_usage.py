"""Every usage error of every command is one red line and exit 2; help teaches without noise."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import Cli

NOISE = ("╭", "│", "Traceback", "Value error", "Usage:", "Try '")

USAGE_ERRORS: list[tuple[list[str], str]] = [
    (["--bogus"], "No such option: --bogus"),
    (["nosuch"], "No such command 'nosuch'"),
    (["run", "--bogus"], "No such option: --bogus"),
    (["run", "hi", "--format", "yaml"], "unknown format 'yaml' (choose one of: text, json, markdown)"),
    (["run", "hi", "--output", "yaml"], "unknown format 'yaml'"),
    (["run", "hi", "--json", "--format", "text"], "contradict"),
    (["run", "hi", "-o", "temperature", "hot"], "model option temperature needs a number, got 'hot'"),
    (["run", "hi", "-o", "temprature", "0.2"], "unknown model option 'temprature'"),
    (["run", "hi", "-o", "temperature"], "requires 2 arguments"),
    (["run", "hi", "--max-steps", "0"], "--max-steps"),
    (["run", "hi", "--max-steps", "many"], "--max-steps"),
    (["run", "hi", "-c", "--conversation", "x"], "give one of them"),
    (["run", "hi", "--conversation", "nope"], "unknown conversation 'nope'"),
    (["run", "hi", "--model", " "], "--model is empty"),
    (["run", "hi", "--system", ""], "--system is empty"),
    (["run", "hi", "--mode", "telepathy"], "unknown mode 'telepathy'"),
    (["chat", "--mode", "telepathy"], "unknown mode 'telepathy'"),
    (["chat", "--profile", "nope"], "unknown profile 'nope'"),
    (["batch", "--input", "/no/such/file.txt"], "does not exist"),
    (["batch", "--input", "-", "--format", "xml"], "unknown format 'xml'"),
    (["batch", "--parallel", "0"], "--parallel"),
    (["batch"], "standard input has no questions"),
    (["runs", "list", "--status", "sleeping"], "unknown status 'sleeping'"),
    (["runs", "list", "--limit", "0"], "--limit"),
    (["runs", "list", "--format", "csv"], "unknown format 'csv'"),
    (["runs", "list", "-q", " "], "--query is empty"),
    (["runs", "show"], "Missing argument"),
    (["runs", "show", "a", "b"], "unexpected extra argument"),
    (["runs", "show", "last", "--events", "--no-events"], "contradict"),
    (["runs", "show", "last"], "there are no runs yet"),
    (["config", "show", "nosection"], "unknown config section 'nosection'"),
    (["config", "path", "nowhere"], "unknown path 'nowhere'"),
    (["config", "set", "http.port"], "Missing argument"),
    (["config", "set", "a..b", "1"], "invalid key 'a..b'"),
    (["config", "set", "runtime.max_concurrent_runs", "0"], "runtime.max_concurrent_runs"),
    (["config", "set", "providers.openai.api_key", "sk-abcdefghijklmnop"], "secrets are referenced"),
    (["profile", "use", "nope"], "unknown profile 'nope'"),
    (["profile", "list", "--format", "yaml"], "unknown format 'yaml'"),
    (["tool", "list", "--category", "nope"], "unknown category 'nope'"),
    (["tool", "test"], "Missing argument"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--reload", "--workers", "2"], "--reload restarts one HTTP worker"),
    (["keys", "create"], "Missing option '--name'"),
    (["keys", "revoke", "nope"], "nope"),
    (["keys", "list", "--format", "yaml"], "unknown format 'yaml'"),
]


def test_every_usage_error_is_one_red_line_and_exit_2(cli: Cli) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: (case, cli(*case[0])), USAGE_ERRORS))
    problems = []
    for (args, expected), done in results:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        ok = (
            done.returncode == 2
            and done.stdout == ""
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and expected in lines[0]
            and not any(mark in lines[0] for mark in NOISE)
        )
        if not ok:
            problems.append(f"agent {' '.join(args)} -> {done.returncode}: {done.stdout!r} {done.stderr!r}")
    assert not problems, "\n".join(problems)


HELP_PAGES = [
    [],
    ["run"],
    ["chat"],
    ["batch"],
    ["serve"],
    ["runs"],
    ["runs", "list"],
    ["runs", "show"],
    ["config"],
    ["config", "show"],
    ["config", "path"],
    ["config", "set"],
    ["profile"],
    ["profile", "list"],
    ["profile", "use"],
    ["tool"],
    ["tool", "list"],
    ["tool", "test"],
    ["keys"],
    ["keys", "create"],
    ["keys", "list"],
    ["keys", "revoke"],
]


def help_pages(cli: Cli) -> dict[str, str]:
    def show(path: list[str]) -> tuple[str, subprocess.CompletedProcess[str]]:
        return " ".join(path), cli(*path, "--help")

    with ThreadPoolExecutor(max_workers=4) as pool:
        pages = dict(pool.map(show, HELP_PAGES))
    for name, done in pages.items():
        assert done.returncode == 0 and done.stderr == "", (name, done.stderr)
    return {name: done.stdout for name, done in pages.items()}


def test_help_has_no_type_noise_and_does_not_contradict_itself(cli: Cli) -> None:
    pages = help_pages(cli)
    for name, page in pages.items():
        assert "<bool>" not in page and "<str>" not in page and "<path>" not in page, (name, page)
        assert "╭" not in page, name
    run_mode = option_help(pages["run"], "--mode")
    assert "[default:" not in run_mode and "default: the config's default_mode" in run_mode
    assert "--model" in run_mode  # -m is the mode; the help says where the model is chosen
    assert "model" in option_help(pages["run"], "--model").lower()
    chat_mode = option_help(pages["chat"], "--mode")
    assert "[default: chat]" in chat_mode and "auto." not in chat_mode.lower()
    for name in ("run", "batch"):
        assert "--format FORMAT" in pages[name] and "--output-file FILE" in pages[name], name
    for name in ("runs list", "runs show", "profile list", "tool list", "keys list"):
        assert "--format FORMAT" in pages[name] and "--json" in pages[name], name
    assert (
        "--max-steps N" in pages["run"]
        and "--max-steps N" in pages["chat"]
        and "--max-steps N" in pages["batch"]
    )
    assert "/docs" in pages["serve"] and "--reload" in pages["serve"]
    assert "~/.bashrc" in pages[""]  # --install-completion says what it changes


def option_help(page: str, option: str) -> str:
    """The help text of one option (its line and the indented lines that continue it)."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if option + " " in line or line.rstrip().endswith(option))
    text = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip().startswith("-") or not line.startswith(" " * 10):
            break
        text.append(line.strip())
    return " ".join(" ".join(text).split())


def test_no_subcommand_prints_help_and_exit_0(cli: Cli) -> None:
    for args in ([], ["runs"], ["config"]):
        done = cli(*args)
        assert done.returncode == 0 and done.stdout.startswith("Usage: agent") and done.stderr == ""


@pytest.mark.parametrize("question", ["-", "--input-file=-"])
def test_reading_stdin_that_is_not_utf8_is_a_usage_error(cli: Cli, tmp_path: Path, question: str) -> None:
    cli.script({"responses": [{"text": "x"}]})
    done = subprocess.run(
        [*cli_command(), "run", question],
        input=b"\xff\xfe\x00",
        capture_output=True,
        env=cli.env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stderr.decode().strip() == "error: standard input is not UTF-8 text"


def cli_command() -> list[str]:
    from conftest import AGENT

    return [AGENT]
