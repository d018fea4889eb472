"""The configuration as doors see and change it: masked for reading, validated whole for writing.

A change is merged into the user's config file only if the whole resulting configuration is
valid; then it applies to new runs at once (profiles, providers, limits, prices, retry policy,
defaults). Sections read only at start-up (store, http, runtime) are reported as needing a restart.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentstage.errors import ConfigError
from agentstage.observability.masking import is_secret_name, mask
from agentstage.settings import Settings, deep_merge, load_layers, user_config_path, validate_settings

if TYPE_CHECKING:
    from agentstage.runtime.service import RunService

RESTART_SECTIONS = ("store", "http", "runtime", "home", "env", "tools")


def masked_config(settings: Settings) -> dict[str, Any]:
    masked: dict[str, Any] = mask(settings.model_dump(mode="json"))
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
    secrets = literal_secrets(changes)
    if secrets:
        raise ConfigError(
            f"secrets are referenced, never stored: give {', '.join(secrets)} as 'env:VARIABLE'",
            code="config_invalid",
        )
    candidate = validate_settings(deep_merge(load_layers(), changes))
    path = user_config_path(settings)
    current = _read_user_file(path)
    _write_atomically(path, deep_merge(current, changes))
    restart = sorted(section for section in changes if section in RESTART_SECTIONS)
    return candidate, restart


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


def reconfigure(service: RunService, changes: dict[str, Any]) -> list[str]:
    """Apply validated, persisted changes to a running service: new runs use them at once.
    Returns the sections that only take effect after a restart."""
    from agentstage.runtime.wiring import rebuild_models

    settings, restart = apply_changes(service.settings, changes)
    rebuild_models(service, settings)
    return restart


def remember_tool_servers(service: RunService) -> None:
    """Keep the catalog's MCP servers in the user config so they reconnect at the next start."""
    servers = [spec.model_dump(exclude_defaults=True) for spec in service.catalog.servers()]
    reconfigure(service, {"tools": {"mcp_servers": servers}})
