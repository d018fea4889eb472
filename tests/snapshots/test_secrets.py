"""Canary secrets: put them everywhere a user might (provider options, URLs, headers, the
environment) and prove none comes out of a snapshot, an export file, a diff, or the store."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Cli

CANARIES = {
    "key": "sk-canaryOPTION0123456789abcdef",
    "password": "canaryURLPASSWORD",
    "header": "canaryHEADERtoken0123456789",
    "env": "sk-canaryENVIRONMENT0123456789",
    "unlisted": "canaryNOTALLOWLISTED",
}


def test_no_secret_in_any_snapshot_export_or_diff(cli: Cli, tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"responses": [{"text": "Fine."}]}), encoding="utf-8")
    provider = {
        "type": "scripted",
        "script": str(script),
        "api_key": CANARIES["key"],
        "base_url": f"https://bot:{CANARIES['password']}@llm.example.com/v1",
        "headers": {"Authorization": f"Bearer {CANARIES['header']}"},
    }
    cli.configure(
        {
            "providers": {"a": provider, "b": {**provider, "api_key": CANARIES["key"] + "B"}},
            "profiles": {"one": {"chain": [{"provider": "a"}]}, "two": {"chain": [{"provider": "b"}]}},
            "default_profile": "one",
        }
    )
    cli.env["OPENAI_API_KEY"] = CANARIES["env"]
    cli.env["MY_SERVICE_TOKEN"] = CANARIES["unlisted"]
    ids = []
    for profile in ("one", "two"):
        done = cli("run", "--mode", "chat", "--profile", profile, "--output", "json", "hello")
        assert done.returncode == 0, done.stderr
        ids.append(json.loads(done.stdout)["run_id"])
    export = tmp_path / "run.json"
    outputs = [
        cli("snapshot", "show", ids[0]),
        cli("snapshot", "show", ids[0], "--json"),
        cli("snapshot", "export", ids[0], "-o", str(export)),
        cli("snapshot", "diff", ids[0], ids[1]),
        cli("snapshot", "diff", ids[0], ids[1], "--json"),
        cli("replay", ids[0]),
    ]
    assert all(done.returncode == 0 for done in outputs), [done.stderr for done in outputs]
    texts = [done.stdout + done.stderr for done in outputs] + [export.read_text(encoding="utf-8")]
    stored = b"".join(path.read_bytes() for path in cli.home.glob("agentstage.db*"))
    for name, canary in CANARIES.items():
        for text in texts:
            assert canary not in text, (name, text)
        assert canary.encode() not in stored, name
    shown = json.loads(outputs[1].stdout)
    options = shown["profile"]["chain"][0]["options"]
    assert options["api_key"] == "***" and options["headers"]["Authorization"] == "***"
    assert options["base_url"] == "https://bot:***@llm.example.com/v1"
    assert shown["environment"]["OPENAI_API_KEY"] == "***" and "MY_SERVICE_TOKEN" not in shown["environment"]
    diff = json.loads(outputs[4].stdout)
    assert "profile.chain[0].options.api_key" not in {c["field"] for c in diff["config"]}  # both are "***"
    assert {"profile.name", "profile.chain[0].provider"} <= {c["field"] for c in diff["config"]}
