"""The configuration as doors see and change it: masked for reading, validated whole for writing.

A change is merged into the user's config file only if the whole resulting configuration is
valid; then it applies to new runs at once (profiles, providers, limits, prices, retry policy,
defaults). Sections read only at start-up (store, http, runtime) are reported as needing a restart.

Changes made over the network (:func:`reconfigure_remote`) pass extra guards first, because a
configuration can point the server at a program, a file or a host: the settings that guard the
host itself (``security``, ``secrets``, ``http``, ``store``, ``tracing``, ``metrics``, MCP
servers, the environment allow-list) need ``config.security``, which no built-in role has; ``env:`` may only name variables
on ``secrets.allowed_env`` (default: those the configured providers name); a provider's
``base_url``, file paths (scripts, model files, recordings) and the SQL tool's database only with
``http.allow_remote_paths``; and the store's own database is never the SQL tool's database.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentstage.access.config import env_references
from agentstage.access.permissions import require
from agentstage.errors import ConfigError, ForbiddenError
from agentstage.observability.masking import is_secret_name, mask
from agentstage.settings import Settings, deep_merge, load_layers, user_config_path, validate_settings

if TYPE_CHECKING:
    from agentstage.runtime.service import RunService

RESTART_SECTIONS = (
    "store",
    "http",
    "grpc",
    "runtime",
    "home",
    "env",
    "tools",
    "logging",
    "tracing",
    "metrics",
)


# Settings whose names look secret to the masking rules but whose values are modes, not secrets.
NOT_SECRET = (("http", "auth"),)


def masked_config(settings: Settings) -> dict[str, Any]:
    plain = settings.model_dump(mode="json")
    masked: dict[str, Any] = mask(plain)
    for section, key in NOT_SECRET:
        masked[section][key] = plain[section][key]
    return masked


def literal_secrets(changes: Any, path: str = "") -> list[str]:
    """Paths of secret-named values given literally instead of as ``env:NAME`` references."""
    found: list[str] = []
    if isinstance(changes, dict):
        for key, value in changes.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and is_secret_name(str(key)) and value and not value.startswith("env:"):
                found.append(where)
            else:
                found.extend(literal_secrets(value, where))
    elif isinstance(changes, list):
        for index, item in enumerate(changes):
            found.extend(literal_secrets(item, f"{path}[{index}]"))
    return found


def apply_changes(settings: Settings, changes: dict[str, Any]) -> tuple[Settings, list[str]]:
    """Validate ``changes`` on top of the effective configuration, persist them, return the result."""
    candidate, restart = check_changes(changes)
    persist_changes(settings, changes)
    return candidate, restart


def check_changes(
    changes: dict[str, Any], *, shared: dict[str, Any] | None = None
) -> tuple[Settings, list[str]]:
    """The configuration ``changes`` would give (with ``shared``, the changes a scale-out deployment
    shares, see :mod:`agentstage.distributed.shared_config`), and the sections that need a restart;
    a ConfigError if it would not be valid."""
    secrets = literal_secrets(changes)
    if secrets:
        raise ConfigError(
            f"secrets are referenced, never stored: give {', '.join(secrets)} as 'env:VARIABLE'",
            code="config_invalid",
        )
    candidate = validate_settings(deep_merge(deep_merge(load_layers(), shared or {}), changes))
    return candidate, sorted(section for section in changes if section in RESTART_SECTIONS)


def persist_changes(settings: Settings, changes: dict[str, Any]) -> None:
    """Merge ``changes`` into the user's config file."""
    path = user_config_path(settings)
    _write_atomically(path, deep_merge(_read_user_file(path), changes))


def _read_user_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot update {str(path)!r}: it is not readable JSON ({error})") from None
    return data if isinstance(data, dict) else {}


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
    os.replace(temporary, path)


async def reconfigure(service: RunService, changes: dict[str, Any]) -> list[str]:
    """Apply validated, persisted changes to a running service: new runs use them at once; in a
    scale-out deployment every other process applies them too (``service.config_feed``).
    Returns the sections that only take effect after a restart."""
    feed = service.config_feed
    if feed is None:
        settings, restart = apply_changes(service.settings, changes)
    else:  # checked and shared under the document's lock (refused whole if either fails), then kept here
        restart = []

        def check(shared: dict[str, Any]) -> None:
            nonlocal restart
            _, restart = check_changes(changes, shared=shared)

        settings = validate_settings(deep_merge(load_layers(), await feed.publish(changes, check)))
        persist_changes(service.settings, changes)
    _use(service, settings)
    return restart


async def adopt_shared(service: RunService, document: dict[str, Any]) -> None:
    """Apply the changes another process made (the shared document) on top of this process's own
    layers: profiles and providers for new runs, MCP servers connected or dropped to match."""
    _use(service, validate_settings(deep_merge(load_layers(), document)))
    await service.catalog.sync(service.settings.tools.mcp_servers)


def _use(service: RunService, settings: Settings) -> None:
    from agentstage.runtime.wiring import rebuild_models

    # The runtime section takes effect at a restart; what this process runs with (its run slots
    # follow a worker's concurrency) stays as it is.
    rebuild_models(service, settings.model_copy(update={"runtime": service.settings.runtime}))


async def remember_tool_servers(service: RunService) -> None:
    """Keep the catalog's MCP servers in the user config so they reconnect at the next start."""
    servers = [spec.model_dump(exclude_defaults=True) for spec in service.catalog.servers()]
    await reconfigure(service, {"tools": {"mcp_servers": servers}})


# tracing and metrics: where spans go and who may scrape are host decisions, like the store.
HOST_SECTIONS = (
    "security", "secrets", "http", "store", "home", "env", "environment_allowlist", "tracing", "metrics",
)  # fmt: skip
PATH_OPTIONS = ("base_url", "script", "model_path", "recording")


def allowed_env(settings: Settings) -> set[str]:
    if settings.secrets.allowed_env is not None:
        return set(settings.secrets.allowed_env)
    return env_references({name: p.options() for name, p in settings.providers.items()})


def check_remote_change(settings: Settings, changes: dict[str, Any], permissions: frozenset[str]) -> None:
    """Refuse (403) a change made over the network that would reach beyond what it may."""
    host = [section for section in changes if section in HOST_SECTIONS]
    if isinstance(changes.get("tools"), dict) and "mcp_servers" in changes["tools"]:
        host.append("tools.mcp_servers (register servers with POST /api/v1/tools/register)")
    if host:
        try:
            require(permissions, "config.security")
        except ForbiddenError as error:
            raise ForbiddenError(
                f"{', '.join(host)} can only be changed on the host, not over the network "
                f"(needs {'config.security'!r})",
                code="forbidden",
                details=error.details,
            ) from None
    unlisted = sorted(env_references(changes) - allowed_env(settings))
    if unlisted:
        raise ForbiddenError(
            f"'env:' may not name {', '.join(unlisted)}: not on secrets.allowed_env "
            f"({', '.join(sorted(allowed_env(settings))) or 'empty'})",
            code="env_not_allowed",
        )
    paths = _path_changes(settings, changes)
    if paths and not settings.http.allow_remote_paths:
        raise ForbiddenError(
            f"{', '.join(paths)} cannot be set over the network (http.allow_remote_paths is off)",
            code="remote_paths_disabled",
        )


def _path_changes(settings: Settings, changes: dict[str, Any]) -> list[str]:
    found: list[str] = []
    providers = changes.get("providers")
    if isinstance(providers, dict):
        for name, given in providers.items():
            if not isinstance(given, dict):
                continue
            current = settings.providers[name].options() if name in settings.providers else {}
            for option in PATH_OPTIONS:
                value = given.get(option)
                if option in given and current.get(option) != value and not isinstance(value, dict):
                    found.append(f"providers.{name}.{option}")
    tools = changes.get("tools")
    if (
        isinstance(tools, dict)
        and "sql_database" in tools
        and tools["sql_database"] != settings.tools.sql_database
    ):
        found.append("tools.sql_database")
    return found


def check_sql_database(settings: Settings) -> None:
    """The SQL tool reads what its database holds; the store's own file would expose every run and key."""
    store_url = settings.store_url()
    if not store_url.startswith("sqlite"):
        return
    store_file = Path(store_url.split("///", 1)[-1]).expanduser()
    if os.path.realpath(settings.sql_database()) == os.path.realpath(store_file):
        raise ForbiddenError(
            f"tools.sql_database {str(settings.sql_database())!r} is the store's own database; "
            "the SQL tool may never read it",
            code="sql_database_is_store",
        )


async def reconfigure_remote(
    service: RunService, changes: dict[str, Any], permissions: frozenset[str]
) -> list[str]:
    """:func:`reconfigure` for a change that came over the network: guarded first (nothing applied
    when refused)."""
    check_remote_change(service.settings, changes, permissions)
    if isinstance(changes.get("tools"), dict) and "sql_database" in changes["tools"]:
        check_sql_database(validate_settings(deep_merge(load_layers(), changes)))
    return await reconfigure(service, changes)
