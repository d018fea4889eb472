"""Settings: the precedence of ARCHITECTURE.md, the shipped instance files, whole refusal of bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentstage.errors import ConfigError, UnknownProfileError
from agentstage.observability.masking import MASK, mask, masked_environment
from agentstage.resources import resource_dir
from agentstage.settings import load_settings, load_settings_or_defaults


def environ(home: Path, **variables: str) -> dict[str, str]:
    return {"AGENT_HOME": str(home), **variables}


@pytest.mark.parametrize("env", ["local", "cloud", "onprem"])
def test_every_instance_file_is_valid_and_documented(home: Path, env: str) -> None:
    path = resource_dir("configs") / "instances" / f"{env}.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["description"], "each instance file says what it is for"
    settings = load_settings(environ=environ(home, AGENT_ENV=env))
    assert settings.env == env and settings.default_profile in settings.profiles
    assert env in (Path(__file__).parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_layers_override_in_order(home: Path) -> None:
    defaults = load_settings(environ=environ(home))
    assert defaults.runtime.max_concurrent_runs == 4  # local.json over the built-in 16
    (home / "config.json").write_text(
        json.dumps({"runtime": {"max_concurrent_runs": 7, "heartbeat_interval": 3}}), encoding="utf-8"
    )
    user = load_settings(environ=environ(home))
    assert (user.runtime.max_concurrent_runs, user.runtime.heartbeat_interval) == (7, 3)
    env = load_settings(environ=environ(home, AGENT_RUNTIME__MAX_CONCURRENT_RUNS="9", AGENT_PROFILE="fast"))
    assert (env.runtime.max_concurrent_runs, env.runtime.heartbeat_interval, env.default_profile) == (
        9,
        3,
        "fast",
    )
    flags = load_settings(
        {"runtime": {"max_concurrent_runs": 11}},
        environ=environ(home, AGENT_RUNTIME__MAX_CONCURRENT_RUNS="9"),
    )
    assert flags.runtime.max_concurrent_runs == 11


def test_a_config_file_extends_provider_and_profile_tables(home: Path) -> None:
    (home / "config.json").write_text(
        json.dumps(
            {
                "providers": {"vllm": {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                "profiles": {"mine": {"chain": [{"provider": "vllm", "model": "m"}, {"provider": "local"}]}},
            }
        ),
        encoding="utf-8",
    )
    settings = load_settings(environ=environ(home))
    assert {"local", "fast", "quality", "mine"} <= settings.profiles.keys()
    assert {"local", "openai", "anthropic", "vllm"} <= settings.providers.keys()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"runtime": {"max_concurrent_runs": 0}}, "runtime.max_concurrent_runs"),
        ({"default_profile": "ghost"}, "default_profile 'ghost'"),
        ({"profiles": {"x": {"chain": [{"provider": "ghost"}]}}}, "unknown provider 'ghost'"),
        ({"limits": {"max_steps": "many"}}, "limits.max_steps"),
        ({"runtime": {"no_such_key": 1}}, "runtime.no_such_key"),
        ({"retry": {"max_delay": "inf"}}, "retry.max_delay: the number must be finite"),
        ({"providers": {"o": {"type": "openai", "timeout": float("-inf")}}}, "providers.o.timeout"),
    ],
)
def test_an_invalid_value_is_refused_whole(home: Path, config: dict[str, object], message: str) -> None:
    (home / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid configuration") as raised:
        load_settings(environ=environ(home))
    assert message in str(raised.value)


def test_broken_config_files_and_unknown_envs_are_clear(home: Path) -> None:
    (home / "config.json").write_text('{\n  "http": {"port": 8080,}\n}', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(environ=environ(home))
    assert str(raised.value) == (
        f"config file {str(home / 'config.json')!r} is not valid JSON: "
        "Expecting property name enclosed in double quotes at line 2, column 25"
    )
    settings, problem = load_settings_or_defaults(environ=environ(home))
    assert problem == str(raised.value) and settings.http.port == 8080 and settings.default_profile == "local"
    (home / "agent.yaml").write_text("http:\n  port: [8080\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"is not valid YAML: .* at line 3, column 1"):
        load_settings(environ=environ(home, AGENT_CONFIG=str(home / "agent.yaml")))
    with pytest.raises(ConfigError, match="AGENT_ENV='mars'"):
        load_settings_or_defaults(environ=environ(home, AGENT_ENV="mars"))  # not the user file: raised
    with pytest.raises(ConfigError, match="AGENT_ENV='mars'"):
        load_settings(environ=environ(home, AGENT_ENV="mars", AGENT_CONFIG=str(home / "absent.json")))


def test_unknown_profiles_name_the_known_ones(home: Path) -> None:
    settings = load_settings(environ=environ(home))
    with pytest.raises(UnknownProfileError, match="available: fast, local, quality"):
        settings.profile("turbo")


def test_masking_hides_secret_names_and_secret_looking_values() -> None:
    masked = mask(
        {
            "api_key": "abc123",
            "base_url": "https://user:hunter2@example.com/v1",
            "note": "sk-proj-abcdefghijklmnop",
            "ref": "env:OPENAI_API_KEY",
            "nested": [{"password": "p"}, {"model": "gpt-4o"}],
        }
    )
    assert masked["api_key"] == MASK and masked["note"] == MASK and masked["ref"] == "env:OPENAI_API_KEY"
    assert masked["base_url"] == f"https://user:{MASK}@example.com/v1"
    assert masked["nested"] == [{"password": MASK}, {"model": "gpt-4o"}]
    captured = masked_environment(
        {"ANTHROPIC_API_KEY": "x", "LANG": "C", "OTHER": "y"}, ["ANTHROPIC_API_KEY", "LANG"]
    )
    assert captured == {"ANTHROPIC_API_KEY": MASK, "LANG": "C"}


def test_the_store_pool_fits_the_runs_a_process_executes(home: Path) -> None:
    """A pool smaller than the runs a process executes at once opens and closes a connection for
    every use beyond it: a worker's pool follows its run slots, an explicit size wins."""
    from agentstage.runtime.wiring import build_store

    scale_out = environ(
        home,
        AGENT_STORE__URL="postgresql+psycopg://agent@127.0.0.1:9/agentstage",
        AGENT_REDIS__URL="redis://127.0.0.1:9",
    )
    worker = load_settings({"runtime": {"max_concurrent_runs": 32}}, environ=scale_out)
    assert build_store(worker, executes_runs=True).pool_size == 36
    assert build_store(worker, executes_runs=False).pool_size == 10  # an API process that only serves
    small = load_settings({"runtime": {"max_concurrent_runs": 2}}, environ=scale_out)
    assert build_store(small, executes_runs=True).pool_size == 10
    chosen = load_settings(
        {"store": {"pool_size": 5}, "runtime": {"max_concurrent_runs": 32}}, environ=scale_out
    )
    assert build_store(chosen, executes_runs=True).pool_size == 5
    with pytest.raises(ConfigError, match="pool_size"):
        load_settings({"store": {"pool_size": 0}}, environ=scale_out)


def test_agent_serve_execute_runs_as_many_at_once_as_its_worker_claims(home: Path) -> None:
    from agentstage.runtime.wiring import build_service

    scale_out = environ(
        home,
        AGENT_STORE__URL="postgresql+psycopg://agent@127.0.0.1:9/agentstage",
        AGENT_REDIS__URL="redis://127.0.0.1:9",
    )
    settings = load_settings(
        {"runtime": {"execute_in_api": True, "worker_concurrency": 32, "max_concurrent_runs": 4}},
        environ=scale_out,
    )
    service = build_service(settings)  # nothing is opened until the service starts
    assert service.settings.runtime.max_concurrent_runs == 32  # claimed runs are not held back
    assert getattr(service.store, "pool_size", None) == 36


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("sqlite:///runs.db", "sqlite+aiosqlite:///runs.db"),
        ("sqlite+aiosqlite:////var/lib/agent/runs.db", "sqlite+aiosqlite:////var/lib/agent/runs.db"),
        ("postgres://agent:pw@db:5432/agent", "postgresql+psycopg://agent:pw@db:5432/agent"),
        ("postgresql://agent@db/agent", "postgresql+psycopg://agent@db/agent"),
        ("postgresql+psycopg://agent@db/agent", "postgresql+psycopg://agent@db/agent"),
    ],
)
def test_store_urls_take_the_driver_the_product_ships(home: Path, url: str, stored: str) -> None:
    assert load_settings(environ=environ(home, AGENT_STORE__URL=url)).store_url() == stored
    with_env = load_settings(environ=environ(home, AGENT_STORE__URL="env:STORE_AT"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORE_AT", url)
        assert with_env.store_url() == stored


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root:hunter2@db/agent", "'mysql' is not a store agentstage can use"),
        ("postgresql+asyncpg://agent@db/agent", "'postgresql+asyncpg' is not a store agentstage can use"),
        ("runs.db", "not a URL"),
        ("sqlite+aiosqlite:///", "an SQLite store needs a database file"),
        ("sqlite+aiosqlite:///:memory:", "would lose every run at exit"),
        ("sqlite://host/runs.db", "an SQLite store needs a database file"),
    ],
)
def test_a_store_url_that_cannot_work_is_refused_in_one_line(home: Path, url: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ=environ(home, AGENT_STORE__URL=url))
    text = str(refused.value)
    assert "store.url" in text and message in text and "sqlite+aiosqlite:///" in text  # says what works
    assert "hunter2" not in text  # a URL may hold a password: the message names the scheme only
    with_env = load_settings(environ=environ(home, AGENT_STORE__URL="env:STORE_AT"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORE_AT", url)
        with pytest.raises(ConfigError, match=r"store\.url \(from STORE_AT\)") as from_env:
            with_env.store_url()
    assert message in str(from_env.value) and "hunter2" not in str(from_env.value)
