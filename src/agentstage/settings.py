"""Settings and their precedence.

Lowest first: built-in defaults < ``configs/instances/{env}.json`` < the user config file
(``$AGENT_HOME/config.json`` or ``$AGENT_CONFIG``) < ``AGENT_*`` environment variables (nested
keys with ``__``, values parsed as JSON when they can be: ``AGENT_RUNTIME__MAX_CONCURRENT_RUNS=4``)
< explicit overrides (CLI flags, request fields). Dicts merge key by key; everything is validated
once, after merging, so an invalid value anywhere is refused whole.
Secrets are referenced (``env:OPENAI_API_KEY``), never written in config files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentstage.access.config import SecretsSettings, SecuritySettings, env_references
from agentstage.core.limits import RunLimits
from agentstage.errors import ConfigError, UnknownProfileError
from agentstage.observability.config import LoggingSettings, MetricsSettings, TracingSettings
from agentstage.providers.resilience import RetryPolicy
from agentstage.resources import instance_config, sample_database
from agentstage.types import Mode

ENV_PREFIX = "AGENT_"
# Variables the shipped instance configs refer to (env:NAME), not settings of their own.
_NOT_SETTINGS = {"AGENT_HOME", "AGENT_ENV", "AGENT_CONFIG", "AGENT_DATABASE_URL", "AGENT_REDIS_URL"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderSettings(BaseModel):
    """A provider endpoint. Options beyond ``type`` depend on it: ``model_path``, ``n_ctx`` (local);
    ``base_url``, ``api_key``, ``timeout`` (openai, anthropic); ``script`` (scripted). ``type`` is a
    built-in kind or one an installed plugin adds."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(min_length=1)

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ChainEntry(Strict):
    provider: str
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class ProfileSettings(Strict):
    description: str = ""
    chain: list[ChainEntry] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict, description="Overrides of the global limits.")


# The store URLs the product ships a driver for, by the scheme a user may write.
_STORE_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}
_STORE_URL_FORMS = (
    "sqlite+aiosqlite:///path/to/agentstage.db (embedded) or "
    "postgresql+psycopg://user:password@host:5432/database"
)


def canonical_store_url(url: str) -> str:
    """The store URL with the driver the product ships (``sqlite://`` and ``postgresql://`` are
    accepted as written by most tools). A scheme with no shipped driver, or an SQLite store with no
    file (every run would be lost at exit), is refused here in one line rather than as a driver
    error at first use. The message names the scheme only: a URL may hold a password."""
    scheme, separator, rest = url.partition("://")
    driver = _STORE_DRIVERS.get(scheme.lower()) if separator else None
    if driver is None:
        what = f"{scheme!r} is not a store agentstage can use" if separator else "not a URL"
        raise ValueError(f"{what}; use {_STORE_URL_FORMS}")
    if driver == "sqlite+aiosqlite" and (
        not rest.startswith("/") or rest[1:].split("?")[0] in ("", ":memory:")
    ):
        raise ValueError(
            "an SQLite store needs a database file (sqlite+aiosqlite:///relative/path.db or "
            "sqlite+aiosqlite:////absolute/path.db); an in-memory store would lose every run at exit"
        )
    return f"{driver}://{rest}"


class StoreSettings(Strict):
    url: str | None = Field(
        default=None,
        description="Where runs are stored: sqlite+aiosqlite:///path (embedded) or "
        "postgresql+psycopg://user:password@host:5432/database (scale-out), or 'env:NAME' holding one. "
        "Default: SQLite in AGENT_HOME.",
    )
    write_timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a write may wait on a locked or unreachable store before the runs concerned "
        "fail with store_unavailable (new runs are refused with 503 meanwhile).",
    )
    pool_size: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="PostgreSQL connections each process keeps open. Default: the runs it executes at once "
        "plus 4 (a worker: --concurrency + 4), at least 10. Too small a pool opens and closes a connection "
        "for every use beyond it, which costs the server a process start each time.",
    )
    encryption_key: str | None = Field(
        default=None,
        description="Turns on encryption at rest (AES-256-GCM) of run inputs, outputs, events, messages and "
        "snapshots: 'env:NAME' or 'file:/path' holding 32 random bytes as base64 or hex "
        "(`agent store generate-key` prints one).",
    )
    decryption_keys: list[str] = Field(
        default_factory=list,
        description="Older keys ('env:NAME' or 'file:/path') that still open data sealed before a key "
        "rotation; never used to seal. Drop one once `agent store rotate-key` has finished.",
    )

    @field_validator("url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None or value.startswith("env:"):
            return value  # an env: reference is checked once it is read (store_url)
        return canonical_store_url(value)

    @field_validator("encryption_key")
    @classmethod
    def _key_reference(cls, value: str | None) -> str | None:
        if value is not None:
            _check_key_reference(value, "store.encryption_key")
        return value

    @field_validator("decryption_keys")
    @classmethod
    def _key_references(cls, value: list[str]) -> list[str]:
        for index, reference in enumerate(value):
            _check_key_reference(reference, f"store.decryption_keys[{index}]")
        return value

    def key_variables(self) -> set[str]:
        """Environment variables that hold store keys."""
        references = [self.encryption_key, *self.decryption_keys]
        return {ref[4:] for ref in references if ref and ref.startswith("env:")}


def _check_key_reference(value: str, what: str) -> None:
    if not value.startswith(("env:", "file:")) or len(value) < 5:
        raise ValueError(
            f"{what} must say where the key lives ('env:NAME' or 'file:/path'), never hold the key itself"
        )


class ToolSettings(Strict):
    sql_database: str | None = Field(
        default=None, description="SQLite file for sql.query; default: sample sales data."
    )
    sql_max_rows: int = Field(default=200, ge=1, le=100_000)
    sql_max_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest sql.query answer (and largest value inside it)."
    )
    sql_timeout: float = Field(default=5.0, gt=0)
    sql_concurrency: int = Field(default=4, ge=1, le=64, description="sql.query calls that run at once.")
    call_timeout: float = Field(default=30.0, gt=0)
    max_output_chars: int = Field(
        default=262_144,
        ge=1024,
        description="Longest string a tool may return; longer ones are cut (marked).",
    )
    mcp_servers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="MCP servers whose tools agents may use: {name, command, args, env} or {name, url}.",
    )


class RuntimeSettings(Strict):
    max_concurrent_runs: int = Field(default=16, ge=1, le=10_000)
    heartbeat_interval: float = Field(default=2.0, gt=0)
    worker_lost_after: float = Field(default=30.0, gt=0)
    max_input_chars: int = Field(default=100_000, ge=1)
    max_event_bytes: int = Field(
        default=1_048_576,
        ge=4096,
        description="Largest event kept in a run's log; longer strings in it are cut, and the cut is marked.",
    )
    cancel_grace: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds a cancelled run's work may take to stop before the run ends without it.",
    )
    max_attempts: int = Field(
        default=1,
        ge=1,
        le=10,
        description="Attempts at a run marked idempotent whose worker is lost; other runs always get "
        "one (a retry repeats model calls and tool side effects) and fail with worker_lost.",
    )
    drain_timeout: float = Field(
        default=30.0,
        ge=0,
        description="Seconds a stopping worker lets its runs finish before cancelling them ('shutdown').",
    )
    tenant_max_concurrent_runs: int | None = Field(
        default=None, ge=1, description="Runs one tenant may have executing at once (unset: no limit)."
    )
    tenant_limits: dict[str, int] = Field(
        default_factory=dict, description="Per-tenant overrides of tenant_max_concurrent_runs."
    )
    execute_in_api: bool = Field(
        default=False,
        description="With PostgreSQL and Redis, agent serve also executes queued runs (agent serve --execute).",
    )
    worker_concurrency: int = Field(default=8, ge=1, le=1000, description="Runs one worker executes at once.")
    tenant_overflow: Literal["queue", "reject"] = Field(
        default="queue",
        description="A run over its tenant's limit waits its turn ('queue') or is refused with 429 "
        "and Retry-After ('reject').",
    )

    def tenant_limit(self, tenant: str) -> int | None:
        return self.tenant_limits.get(tenant, self.tenant_max_concurrent_runs)


class RedisSettings(Strict):
    """Live events between processes (scale-out): one Redis Stream per run."""

    url: str | None = Field(default=None, description="redis://host:port/db; unset: no Redis (embedded).")
    stream_maxlen: int = Field(default=10_000, ge=100, description="Entries kept per run stream (trimmed).")
    stream_ttl: float = Field(default=3600.0, gt=0, description="Seconds a run's stream lives after it ends.")

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://", "env:")):
            raise ValueError(f"{value!r} is not a Redis URL (redis://host:port/db, rediss://… or unix://…)")
        return value


class HttpSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    auth: Literal["api_keys", "off"] = Field(
        default="api_keys", description="'off' only for local use; the server says so at start-up."
    )
    requests_per_minute: int = Field(default=600, ge=1, description="Default rate limit per API key.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_inputs: int = Field(default=500, ge=1)
    max_parallel: int = Field(default=32, ge=1)
    sse_keepalive: float = Field(default=15.0, gt=0, description="Seconds between SSE keep-alive comments.")
    ws_heartbeat: float = Field(default=15.0, gt=0, description="Seconds between WebSocket pings.")
    ws_buffer: int = Field(default=1000, ge=10, description="Events buffered for a slow WebSocket client.")
    allow_remote_paths: bool = Field(
        default=False,
        description="Let config changes over HTTP set provider base_url, file paths and the SQL database.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (none: off).")


class GrpcSettings(Strict):
    """The gRPC door, served by ``agent serve --grpc-port`` next to the HTTP API (or alone)."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535, description="Port; unset: no gRPC server.")
    max_receive_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=2**31 - 1)
    max_send_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=2**31 - 1)
    max_concurrent_streams: int = Field(default=100, ge=1, description="Concurrent calls per connection.")
    keepalive_time: float = Field(
        default=60.0, gt=0, description="Seconds between pings on a quiet connection."
    )
    keepalive_timeout: float = Field(default=20.0, gt=0, description="Seconds to wait for a ping's answer.")
    min_client_ping_interval: float = Field(
        default=10.0, gt=0, description="Clients that ping more often are told to go away (too_many_pings)."
    )
    shutdown_grace: float = Field(default=10.0, ge=0, description="Seconds calls get to finish at shutdown.")
    health_interval: float = Field(default=5.0, gt=0, description="Seconds between readiness checks.")
    reuse_port: bool = Field(default=False, description="Let several server processes share the port.")


class Price(Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)


def _default_providers() -> dict[str, ProviderSettings]:
    return {
        "local": ProviderSettings(type="local"),
        "openai": ProviderSettings(type="openai", api_key="env:OPENAI_API_KEY"),
        "anthropic": ProviderSettings(type="anthropic", api_key="env:ANTHROPIC_API_KEY"),
    }


def _default_profiles() -> dict[str, ProfileSettings]:
    local = ChainEntry(provider="local")
    return {
        "local": ProfileSettings(
            description="The embedded model; no key, no network.",
            chain=[local],
            # Greedy: a 135M model sampled at any temperature drifts into other languages.
            params={"temperature": 0.0, "max_tokens": 512},
        ),
        "fast": ProfileSettings(
            description="The embedded model, greedy and short.",
            chain=[local],
            params={"temperature": 0.0, "max_tokens": 256},
            limits={"max_steps": 4},
        ),
        "quality": ProfileSettings(
            description="OpenAI, then Anthropic, then the embedded model.",
            chain=[
                ChainEntry(provider="openai", model="gpt-4o-mini"),
                ChainEntry(provider="anthropic", model="claude-sonnet-4-5"),
                local,
            ],
            params={"temperature": 0.2, "max_tokens": 1024},
        ),
    }


def _default_pricing() -> dict[str, Price]:
    return {
        "local/*": Price(input=0, output=0),
        "scripted/*": Price(input=0, output=0),
        "openai/gpt-4o-mini": Price(input=0.15, output=0.60, cached_input=0.075),
        "openai/gpt-4o": Price(input=2.50, output=10.00, cached_input=1.25),
        "anthropic/claude-sonnet-4-5": Price(input=3.00, output=15.00, cached_input=0.30),
        "anthropic/claude-haiku-4-5": Price(input=1.00, output=5.00, cached_input=0.10),
    }


class Settings(Strict):
    description: str = ""
    env: str = "local"
    home: Path
    default_profile: str = "local"
    default_mode: Mode = Mode.AUTO
    providers: dict[str, ProviderSettings] = Field(default_factory=_default_providers)
    profiles: dict[str, ProfileSettings] = Field(default_factory=_default_profiles)
    store: StoreSettings = Field(default_factory=StoreSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    limits: RunLimits = Field(default_factory=RunLimits)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    pricing: dict[str, Price] = Field(default_factory=_default_pricing)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    environment_allowlist: list[str] = Field(
        default_factory=lambda: [
            "AGENT_ENV",
            "AGENT_PROFILE",
            "LANG",
            "TZ",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
        ],
        description="Environment variables recorded in run snapshots (secret-looking values masked).",
    )

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        from agentstage.providers.registry import provider_kinds

        kinds = provider_kinds()
        for name, provider in self.providers.items():
            if provider.type not in kinds:
                raise ValueError(
                    f"provider {name!r} has unknown type {provider.type!r} (known: {', '.join(kinds)})"
                )
        for name, profile in self.profiles.items():
            for entry in profile.chain:
                if entry.provider not in self.providers:
                    raise ValueError(f"profile {name!r} uses unknown provider {entry.provider!r}")
            RunLimits.model_validate({**self.limits.model_dump(), **profile.limits})
        if self.default_profile not in self.profiles:
            raise ValueError(f"default_profile {self.default_profile!r} is not a defined profile")
        self._keep_store_keys_private()
        return self

    def _keep_store_keys_private(self) -> None:
        """A variable holding a store key must not be one that config changes over HTTP may name
        (a provider could send it anywhere) nor one recorded in run snapshots."""
        key_variables = self.store.key_variables()
        exposed = {
            "secrets.allowed_env": set(self.secrets.allowed_env or ()),
            "environment_allowlist": set(self.environment_allowlist),
            "providers": env_references({n: p.options() for n, p in self.providers.items()}),
            "tools.mcp_servers": env_references(self.tools.mcp_servers),
        }
        for where, names in exposed.items():
            shared = sorted(key_variables & names)
            if shared:
                raise ValueError(
                    f"{', '.join(shared)} holds a store encryption key and may not also appear in {where}"
                )

    def profile(self, name: str | None) -> ProfileSettings:
        name = name or self.default_profile
        if name not in self.profiles:
            known = ", ".join(sorted(self.profiles))
            raise UnknownProfileError(f"unknown profile {name!r} (available: {known})")
        return self.profiles[name]

    def limits_for(self, profile: str | None, options: dict[str, Any] | None = None) -> RunLimits:
        merged = {**self.limits.model_dump(), **self.profile(profile).limits}
        merged.update({k: v for k, v in (options or {}).items() if k in RunLimits.model_fields})
        return RunLimits.model_validate(merged)

    def store_url(self) -> str:
        url = self.store.url
        if url and url.startswith("env:"):
            variable = url[4:]
            url = os.environ.get(variable) or None
            if url is None:
                raise ConfigError(f"store.url refers to {variable}, which is not set")
            try:
                url = canonical_store_url(url)
            except ValueError as error:
                raise ConfigError(f"store.url (from {variable}): {error}") from None
        return url or f"sqlite+aiosqlite:///{self.home / 'agentstage.db'}"

    def redis_url(self) -> str | None:
        url = self.redis.url
        if url and url.startswith("env:"):
            url = os.environ.get(url[4:]) or None
        return url

    def distributed(self) -> bool:
        """PostgreSQL and Redis configured: runs go to ``agent worker`` processes through the queue."""
        return self.redis_url() is not None and not self.store_url().startswith("sqlite")

    def sql_database(self) -> Path:
        return Path(self.tools.sql_database).expanduser() if self.tools.sql_database else sample_database()


def default_home() -> Path:
    configured = os.environ.get("AGENT_HOME")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("agentstage", appauthor=False))


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_file(path: Path, what: str) -> dict[str, Any]:
    """A config file as a dict. ``.json`` files are parsed as JSON (so a mistake is reported as a
    JSON mistake), anything else as YAML; either way an error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text") from None
    data = _parse_json(text, path, what) if path.suffix.lower() == ".json" else _parse_yaml(text, path, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold an object, got {type(data).__name__}")
    return data


def _parse_json(text: str, path: Path, what: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{what} {str(path)!r} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}",
        ) from None


def _parse_yaml(text: str, path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or "cannot be parsed"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {problem}{where}") from None


def _default_tables() -> dict[str, Any]:
    """Built-in providers, profiles and prices as the first layer, so a config file that adds one
    entry extends these tables instead of replacing them."""
    return {
        "providers": {k: v.model_dump() for k, v in _default_providers().items()},
        "profiles": {k: v.model_dump() for k, v in _default_profiles().items()},
        "pricing": {k: v.model_dump() for k, v in _default_pricing().items()},
    }


def _instance_layer(env: str) -> dict[str, Any]:
    path = Path(env) if env.endswith((".json", ".yaml", ".yml")) else instance_config(env)
    if not path.is_file():
        if env == "local":
            return {}  # the built-in defaults are the local instance
        raise ConfigError(f"instance config {str(path)!r} for AGENT_ENV={env!r} does not exist")
    data = _read_file(path, "instance config")
    data.pop("$schema", None)
    return data


def _env_layer(environ: dict[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _NOT_SETTINGS:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        if path == ["profile"]:
            path = ["default_profile"]
        if path == ["mode"]:
            path = ["default_mode"]
        if path in (["log_level"], ["log_format"]):
            path = ["logging", path[0][4:]]
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        cursor = layer
        for part in path[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[path[-1]] = value
    return layer


def load_layers(
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    *,
    user_file: bool = True,
) -> dict[str, Any]:
    environ = dict(os.environ if environ is None else environ)
    home = Path(environ["AGENT_HOME"]).expanduser() if environ.get("AGENT_HOME") else default_home()
    env = (overrides or {}).get("env") or environ.get("AGENT_ENV") or "local"
    merged: dict[str, Any] = {"home": str(home), "env": env, **_default_tables()}
    merged = deep_merge(merged, _instance_layer(env))
    path = Path(environ["AGENT_CONFIG"]).expanduser() if environ.get("AGENT_CONFIG") else home / "config.json"
    if user_file and (path.is_file() or environ.get("AGENT_CONFIG")):
        merged = deep_merge(merged, _read_file(path, "config file"))
    merged = deep_merge(merged, _env_layer(environ))
    return deep_merge(merged, overrides or {})


def validate_settings(data: dict[str, Any]) -> Settings:
    try:
        settings = Settings.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(root)'}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
    # "inf" and "1e999" are floats to Python: a delay or limit of infinity is never what was meant,
    # and the configuration is written back as JSON, which has no such number.
    where = _non_finite(settings.model_dump())
    if where is not None:
        raise ConfigError(f"invalid configuration: {where}: the number must be finite (not inf or nan)")
    return settings


def _non_finite(value: Any, path: str = "") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(root)"
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def load_settings(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
    return validate_settings(load_layers(overrides, environ))


def load_settings_or_defaults(
    overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> tuple[Settings, str | None]:
    """Settings for commands that only read: when the user's config file cannot be read or parsed,
    the configuration without it and the reason, so a broken file never locks anyone out of their
    records. A file that parses but holds an invalid value is refused as usual (it says what the
    user meant, so silently using the defaults instead would mislead)."""
    try:
        layers = load_layers(overrides, environ)
    except ConfigError as error:
        try:
            layers = load_layers(overrides, environ, user_file=False)
        except ConfigError:
            raise error from None
        return validate_settings(layers), error.message
    return validate_settings(layers), None


def user_config_path(settings: Settings) -> Path:
    return (
        Path(os.environ["AGENT_CONFIG"]).expanduser()
        if os.environ.get("AGENT_CONFIG")
        else settings.home / "config.json"
    )
