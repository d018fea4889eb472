"""Per-run choices on the command line: model, system prompt, model options, step limit,
conversations, and profile chains whose providers have no key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Cli, scripted_config

SCRIPT: dict[str, Any] = {
    "rules": [
        {"match": "name is Ada", "text": "Hello Ada."},
        {"match": "my name", "text": "You are Ada."},
    ],
    "responses": [{"text": "Fine."}],
}


def run(cli: Cli, *args: str) -> dict[str, Any]:
    done = cli("run", *args, "--json")
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def events(cli: Cli, run_id: str) -> list[dict[str, Any]]:
    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    found: list[dict[str, Any]] = shown["events"]
    return found


def first(log: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    data: dict[str, Any] = next(e for e in log if e["type"] == kind)["data"]
    return data


def test_model_system_and_options_reach_the_model(cli: Cli) -> None:
    path = cli.home / "script.json"
    path.write_text(json.dumps(SCRIPT), encoding="utf-8")
    config = scripted_config(str(path))
    config["providers"]["other"] = {"type": "scripted", "script": {"responses": [{"text": "From other."}]}}
    cli.configure(config)
    plain = run(cli, "hi", "-m", "chat")
    log = events(cli, plain["run_id"])
    assert first(log, "model.response")["model"] == "scripted-model"
    chosen = run(
        cli, "hi", "-m", "chat", "-M", "custom-model", "-o", "temperature", "0.7", "-o", "stop", '["END"]'
    )
    log = events(cli, chosen["run_id"])
    assert first(log, "model.response")["model"] == "custom-model"
    assert first(log, "model.request")["params"]["temperature"] == 0.7
    assert first(log, "model.request")["params"]["stop"] == ["END"]
    assert chosen["profile"] == "t"
    switched = run(cli, "hi", "-m", "chat", "--model", "other/their-model")
    assert switched["output"] == "From other."
    assert first(events(cli, switched["run_id"]), "model.response")["provider"] == "other"
    extra = "Always answer in the voice of a pirate. " * 10
    steered = run(cli, "hi", "-m", "chat", "--system", extra)
    log = events(cli, steered["run_id"])
    assert first(log, "model.request")["params"]["system"] == extra
    grew = steered["usage"]["input_tokens"] - plain["usage"]["input_tokens"]
    assert grew >= len(extra.strip()) // 4  # the provider saw the longer system prompt


def test_max_steps_limits_the_run(cli: Cli) -> None:
    cli.script(
        {
            "responses": [
                {"text": "", "tool_calls": [{"name": "math.calculate", "arguments": {"expression": "1+1"}}]}
            ]
        }
    )
    done = cli("run", "add numbers forever", "-m", "react", "--max-steps", "2", "--json")
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert body["status"] == "failed" and body["error"]["code"] == "max_steps"
    assert "max_steps=2" in body["error"]["message"]
    assert first(events(cli, body["run_id"]), "run.queued")["options"]["max_steps"] == 2


def test_continue_and_conversation_carry_the_history(cli: Cli) -> None:
    cli.script(SCRIPT)
    opening = run(cli, "My name is Ada.", "-m", "chat")
    assert opening["output"] == "Hello Ada."
    done = cli("run", "What is my name?", "-m", "chat", "-c", "--json")
    assert done.returncode == 0 and "continuing conversation" in done.stderr
    follow = json.loads(done.stdout)
    messages = [m["content"] for m in first(events(cli, follow["run_id"]), "model.request")["messages"]]
    assert messages[-3:] == ["My name is Ada.", "Hello Ada.", "What is my name?"]
    conversation = follow["conversation_id"]
    assert (
        conversation
        == opening["conversation_id"]
        == first(events(cli, opening["run_id"]), "run.queued")["conversation_id"]
    )
    fresh = run(cli, "Unrelated.", "-m", "chat")
    assert first(events(cli, fresh["run_id"]), "run.queued")["conversation_id"] != conversation
    again = run(cli, "And my name?", "-m", "chat", "--conversation", conversation)
    messages = [m["content"] for m in first(events(cli, again["run_id"]), "model.request")["messages"]]
    assert "Hello Ada." in messages and "You are Ada." in messages and "Unrelated." not in messages


def keyless_config(cli: Cli) -> dict[str, Any]:
    path = cli.home / "script.json"
    path.write_text(json.dumps({"responses": [{"text": "From the fallback."}]}), encoding="utf-8")
    config = scripted_config(str(path))
    config["providers"]["vllm"] = {
        "type": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "env:VLLM_KEY",
    }
    config["profiles"] = {
        "t": {
            "chain": [{"provider": "openai", "model": "gpt-4o-mini"}, {"provider": "vllm"}, {"provider": "s"}]
        },
        "keyless": {"chain": [{"provider": "openai"}, {"provider": "vllm"}]},
    }
    return config


def test_a_provider_without_its_key_is_skipped_with_one_line(cli: Cli) -> None:
    cli.configure(keyless_config(cli))
    done = cli("run", "hi", "-m", "chat")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "From the fallback.\n"
    skipped = [line for line in done.stderr.splitlines() if "skipping" in line]
    assert skipped == [
        "⇢ skipping openai: OPENAI_API_KEY is not set; using s",
        "⇢ skipping vllm: VLLM_KEY is not set; using s",
    ]
    log = events(cli, json.loads(cli("runs", "show", "last", "--json").stdout)["run_id"])
    fallbacks = [e["data"] for e in log if e["type"] == "model.fallback"]
    assert [(f["from_provider"], f["to_provider"], f["reason"]["code"]) for f in fallbacks] == [
        ("openai", "s", "missing_secret"),
        ("vllm", "s", "missing_secret"),
    ]
    assert first(log, "model.request")["provider"] == "s"


def test_every_env_reference_follows_the_same_rule(cli: Cli) -> None:
    cli.configure(keyless_config(cli))
    cli.env["VLLM_KEY"] = "local-key"  # now vllm is usable (and down: port 9), so it is tried and fails
    done = cli("run", "hi", "-m", "chat")
    assert done.returncode == 0, done.stderr
    assert "skipping openai: OPENAI_API_KEY is not set" in done.stderr
    assert "VLLM_KEY" not in done.stderr and "vllm failed (provider_unavailable)" in done.stderr


def test_a_chain_with_no_usable_provider_is_a_setup_error(cli: Cli) -> None:
    cli.configure(keyless_config(cli))
    done = cli("run", "hi", "-m", "chat", "--profile", "keyless")
    assert done.returncode == 2 and done.stdout == ""
    error = done.stderr.splitlines()[0]
    assert error == (
        "error: profile 'keyless' has no usable provider (openai: OPENAI_API_KEY is not set; "
        "vllm: VLLM_KEY is not set); set the key or choose another profile"
    )
    recorded = json.loads(cli("runs", "show", "last", "--json").stdout)
    assert recorded["status"] == "failed" and recorded["error"]["code"] == "no_usable_provider"


def test_batch_takes_the_same_choices_and_reads_stdin(cli: Cli, tmp_path: Path) -> None:
    cli.script(SCRIPT)
    out = tmp_path / "results.jsonl"
    done = cli("batch", "--format", "jsonl", "--output-file", str(out), "-M", "batch-model", "--max-steps", "3",
               stdin="My name is Ada.\n\nsecond line\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["line"], r["output"]) for r in results] == [(1, "Hello Ada."), (3, "Fine.")]
    log = events(cli, results[0]["run_id"])
    assert first(log, "model.response")["model"] == "batch-model"
    assert first(log, "run.queued")["options"]["max_steps"] == 3


def test_chat_continues_the_last_conversation_with_the_same_choices(cli: Cli) -> None:
    cli.script(SCRIPT)
    run(cli, "My name is Ada.", "-m", "chat")
    done = cli(
        "chat", "-c", "-o", "temperature", "0.1", "--max-steps", "2", stdin="What is my name?\n/exit\n"
    )
    assert done.returncode == 0, done.stderr
    assert "You are Ada." in done.stdout and "continuing conversation" in done.stderr
    log = events(cli, json.loads(cli("runs", "show", "last", "--json").stdout)["run_id"])
    assert first(log, "model.request")["params"]["temperature"] == 0.1
    assert "Hello Ada." in [m["content"] for m in first(log, "model.request")["messages"]]
    assert first(log, "run.queued")["options"]["max_steps"] == 2
