"""A local model that cannot work: one clear line naming the file or key, exit 2, nothing written;
``/health/ready`` answers 503 and says why. No model is loaded: the file is checked from its header."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentstage.providers.local import default_model_path
from conftest import Cli
from http_api.conftest import Server
from serving import start_patiently


def broken_models(tmp_path: Path) -> list[tuple[Path, str]]:
    truncated = tmp_path / "truncated.gguf"
    with default_model_path().open("rb") as source:
        truncated.write_bytes(source.read(4_000_000))
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model\n", encoding="utf-8")
    return [
        (tmp_path / "missing.gguf", "does not exist"),
        (truncated, "is truncated"),
        (text, "is not a GGUF model file"),
    ]


def assert_one_red_line(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_broken_model_file_is_one_line_and_exit_2(cli: Cli, tmp_path: Path) -> None:
    for path, reason in broken_models(tmp_path):
        cli.configure({"providers": {"local": {"type": "local", "model_path": str(path)}}})
        done = cli("run", "What is the capital of France?", "--mode", "chat")
        assert done.returncode == 2, done.stderr
        assert_one_red_line(done.stderr, repr(str(path)), reason, "providers.local.model_path")
        assert done.stdout == ""
    listed = cli("runs", "list", "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == "", "no run was written"


@pytest.mark.parametrize("value", ["fast", "yes", 3])
def test_a_bad_repack_value_is_one_line_naming_the_key(cli: Cli, value: object) -> None:
    cli.configure({"providers": {"local": {"type": "local", "repack": value}}})
    done = cli("run", "hi", "--mode", "chat")
    assert done.returncode == 2, done.stderr
    assert_one_red_line(done.stderr, "providers.local.repack", "'auto', 'on', 'off'", repr(value))
    assert cli("runs", "list", "--json").stdout.strip() == ""


def test_readiness_names_the_broken_model_and_the_bad_key(tmp_path: Path) -> None:
    model = tmp_path / "notes.gguf"
    model.write_text("not a model", encoding="utf-8")
    cases = [
        ({"model_path": str(model)}, ["unavailable", str(model), "not a GGUF model file"]),
        ({"repack": "sometimes"}, ["unavailable", "providers.local.repack", "'sometimes'"]),
    ]
    for options, needles in cases:
        home = tmp_path / f"home-{len(options)}-{sorted(options)[0]}"
        home.mkdir()
        config = {
            "providers": {
                "s": {"type": "scripted", "script": str(home / "script.json")},
                "local": {"type": "local", **options},
            },
            "default_profile": "local",
        }
        server = start_patiently(Server(home, config))
        try:
            ready = httpx.get(f"{server.url}/health/ready", timeout=10)
            assert ready.status_code == 503
            check = ready.json()["checks"]["provider:local"]
            for needle in needles:
                assert needle in check, check
            assert httpx.get(f"{server.url}/health/live", timeout=10).status_code == 200
            with server.client() as http:
                refused = http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"})
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "model_unavailable"
                assert http.get("/api/v1/agent/runs").json()["runs"] == []
        finally:
            server.stop()


def test_read_only_commands_still_work_with_a_broken_model(cli: Cli, tmp_path: Path) -> None:
    cli.configure({"providers": {"local": {"type": "local", "model_path": str(tmp_path / "gone.gguf")}}})
    shown = cli("config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "gone.gguf" in shown.stdout
    assert cli("runs", "list").returncode == 0
