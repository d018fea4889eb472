"""Changing and reading the configuration from the ``agent`` command, a broken config file,
API key listings, and shell completion: what it installs and what it offers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import AGENT, Cli

ANSWER = {"responses": [{"text": "Fine."}]}


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_config_set_profile_use_and_config_path(cli: Cli) -> None:
    cli.script(ANSWER)
    path = cli("config", "path")
    assert path.returncode == 0 and path.stdout.strip() == str(cli.home / "config.json")
    assert cli("config", "path", "home").stdout.strip() == str(cli.home)
    store = cli("config", "path", "store").stdout.strip()
    assert store.endswith("agentstage.db") or store.startswith("postgresql+psycopg://"), store  # --store
    done = cli("config", "set", "runtime.max_input_chars", "500")
    assert done.returncode == 0 and "runtime.max_input_chars = 500" in done.stderr, done.stderr
    done = cli("profile", "use", "fast")
    assert done.returncode == 0 and "'fast'" in done.stderr
    stored = json.loads((cli.home / "config.json").read_text(encoding="utf-8"))
    assert stored["runtime"]["max_input_chars"] == 500 and stored["default_profile"] == "fast"
    assert stored["providers"]["s"]["type"] == "scripted"  # the rest of the file is kept
    assert json.loads(cli("config", "show", "runtime").stdout)["max_input_chars"] == 500
    done = cli("run", "x" * 501)
    assert done.returncode == 2 and "over the limit of 500" in one_line(done)
    done = cli("config", "set", "default_mode", "sideways")
    assert done.returncode == 2 and "default_mode" in one_line(done)
    done = cli("config", "set", "retry.max_delay", "inf")  # a float to Python, no number to JSON
    assert done.returncode == 2 and "retry.max_delay: the number must be finite" in one_line(done)
    assert json.loads((cli.home / "config.json").read_text(encoding="utf-8")) == stored  # refused whole


def test_config_show_masks_secrets_but_not_settings_that_sound_secret(cli: Cli) -> None:
    cli.configure(
        {
            "providers": {"remote": {"type": "openai", "api_key": "sk-abcdefghijklmnopqrstuvwx"}},
            "http": {"auth": "off"},
        }
    )
    shown = json.loads(cli("config", "show").stdout)
    assert shown["http"]["auth"] == "off"
    assert shown["providers"]["remote"]["api_key"] == "***"
    assert shown["limits"]["max_tokens"] == 32000


def test_profile_list_prints_whole_model_names(cli: Cli) -> None:
    model = "a-model-with-a-rather-long-name-that-does-not-fit-in-narrow-tables-v2.5-instruct"
    cli.configure(
        {"profiles": {"wide": {"chain": [{"provider": "openai", "model": model}, {"provider": "local"}]}}}
    )
    cli.env["COLUMNS"] = "60"
    listing = cli("profile", "list").stdout
    assert f"openai/{model} → local" in listing
    assert "openai/gpt-4o-mini → anthropic/claude-sonnet-4-5 → local" in listing


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_a_malformed_config_file_is_named_with_line_and_column(cli: Cli) -> None:
    cli.script(ANSWER)
    before = json.loads(cli("run", "before the damage", "--json").stdout)["run_id"]
    (cli.home / "config.json").write_text('{\n  "default_profile": "t",\n  "http": {"port": 80 80}\n}\n')
    done = cli("run", "hi")
    message = one_line(done)
    assert done.returncode == 2 and done.stdout == ""
    assert message == (
        f"error: config file {str(cli.home / 'config.json')!r} is not valid JSON: "
        "Expecting ',' delimiter at line 3, column 23"
    )
    listed = cli("runs", "list", "--json")  # reading still works, with the defaults and one warning
    assert listed.returncode == 0
    assert [json.loads(line)["run_id"] for line in listed.stdout.splitlines()] == [before]
    assert one_line(listed).startswith("warning: config file") and "line 3, column 23" in one_line(listed)
    for args in (["runs", "show", "last"], ["config", "show", "http"], ["profile", "list"], ["tool", "list"]):
        done = cli(*args)
        assert done.returncode == 0 and done.stdout and "line 3, column 23" in one_line(done), args


def test_a_malformed_yaml_config_is_named_with_line_and_column(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "agent.yaml"
    broken.write_text("default_profile: local\nhttp:\n  port: [8080\n", encoding="utf-8")
    cli.env["AGENT_CONFIG"] = str(broken)
    done = cli("run", "hi")
    assert done.returncode == 2
    message = one_line(done)
    assert str(broken) in message and "not valid YAML" in message and "line 4, column 1" in message


def test_keys_list_shows_the_limit_each_key_really_gets(cli: Cli) -> None:
    cli.configure({"http": {"requests_per_minute": 321}})
    assert cli("keys", "create", "--name", "ci").returncode == 0
    assert cli("keys", "create", "--name", "bulk", "--rate", "5").returncode == 0
    rows = {row["name"]: row for row in map(json.loads, cli("keys", "list", "--json").stdout.splitlines())}
    assert rows["ci"]["requests_per_minute"] == 321 and rows["ci"]["rate_source"].startswith("default")
    assert rows["bulk"]["requests_per_minute"] == 5 and rows["bulk"]["rate_source"] == "key"
    table = cli("keys", "list").stdout
    assert "321/min (default)" in table and "5/min" in table and "None" not in table


def test_install_completion_says_what_it_changes(cli: Cli, tmp_path: Path) -> None:
    home = tmp_path / "user"
    home.mkdir()
    (home / ".bashrc").write_text("alias ll='ls -l'", encoding="utf-8")
    env = {**cli.env, "HOME": str(home), "SHELL": "/bin/bash"}

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", f"'{AGENT}' --install-completion"],
            capture_output=True, text=True, env=env, timeout=60, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    done = install()
    assert done.returncode == 0, done.stderr
    script = home / ".bash_completions" / "agent.sh"
    line = f"source '{script}'"
    assert f"wrote the bash completion script to {script}" in done.stdout
    assert f"added this line to {home / '.bashrc'}: {line}" in done.stdout
    assert (home / ".bashrc").read_text(encoding="utf-8") == f"alias ll='ls -l'\n{line}\n"
    assert "_AGENT_COMPLETE=complete_bash" in script.read_text(encoding="utf-8")
    again = install()
    assert "already has the line" in again.stdout
    assert (home / ".bashrc").read_text(encoding="utf-8").count(line) == 1


def complete(cli: Cli, words: str) -> list[str]:
    """What bash completion offers for ``words`` (the last word is the one being completed)."""
    parts = words.split(" ")
    env = {
        **cli.env,
        "_AGENT_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1),
    }
    done = subprocess.run([AGENT], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_completion_offers_modes_profiles_run_ids_and_tools(cli: Cli) -> None:
    cli.script(ANSWER)
    run_id = json.loads(cli("run", "hello", "--json").stdout)["run_id"]
    assert complete(cli, "agent run --mode ") == ["auto", "chat", "react", "planner"]
    assert complete(cli, "agent run -m r") == ["react"]
    assert complete(cli, "agent chat --mode p") == ["planner"]
    assert set(complete(cli, "agent run --profile ")) == {"local", "fast", "quality", "t"}
    assert complete(cli, "agent profile use q") == ["quality"]
    assert complete(cli, "agent runs show ") == ["last", run_id]
    assert complete(cli, f"agent runs show {run_id[:12]}") == [run_id]
    assert complete(cli, "agent tool test math") == ["math.calculate"]
    assert complete(cli, "agent runs list --format j") == ["json"]
