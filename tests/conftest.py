"""Shared fixtures: a private AGENT_HOME, settings with scripted profiles, a real RunService,
and a helper that runs the real ``agent`` executable as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agentstage.runtime.service import RunService
from agentstage.runtime.wiring import build_service
from agentstage.settings import Settings, load_settings

AGENT = str(Path(sys.executable).parent / "agent")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def scripted_config(script: dict[str, Any] | str, **extra: Any) -> dict[str, Any]:
    """Settings overrides with a ``scripted`` provider and a default profile ``t`` that uses it."""
    config: dict[str, Any] = {
        "providers": {"s": {"type": "scripted", "script": script}},
        "profiles": {"t": {"chain": [{"provider": "s"}]}},
        "default_profile": "t",
        "retry": {"base_delay": 0.01, "max_delay": 0.05},
    }
    for key, value in extra.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def make_settings(home: Path, config: dict[str, Any]) -> Settings:
    return load_settings(config, environ={"AGENT_HOME": str(home)})


@pytest.fixture
def make_service(home: Path) -> Callable[..., Any]:
    """``async with make_service(script, **config) as service`` — a real service on a real SQLite file."""

    def factory(script: dict[str, Any] | str, **extra: Any) -> RunService:
        return build_service(make_settings(home, scripted_config(script, **extra)))

    return factory


@pytest.fixture
async def chat_service(make_service: Callable[..., RunService]) -> AsyncIterator[RunService]:
    async with make_service({"responses": [{"text": "Hello there."}]}) as service:
        yield service


class Cli:
    """Runs ``agent`` for real, with AGENT_HOME pointing at the test's home."""

    def __init__(self, home: Path):
        self.home = home
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("AGENT_") and not k.endswith("_API_KEY")
        }
        self.env.update({"AGENT_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"})

    def configure(self, config: dict[str, Any]) -> None:
        (self.home / "config.json").write_text(json.dumps(config), encoding="utf-8")

    def script(self, script: dict[str, Any], **extra: Any) -> None:
        path = self.home / "script.json"
        path.write_text(json.dumps(script), encoding="utf-8")
        self.configure(scripted_config(str(path), **extra))

    def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AGENT, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [AGENT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)
