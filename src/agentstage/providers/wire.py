"""Helpers shared by remote providers: tool names on the wire and secret references."""

from __future__ import annotations

import json
import os
from typing import Any

from agentstage.errors import ConfigError


def to_wire_name(name: str) -> str:
    """Remote APIs allow only ``[A-Za-z0-9_-]`` in tool names, so ``math.calculate`` → ``math__calculate``."""
    return name.replace(".", "__")


def from_wire_name(name: str) -> str:
    return name.replace("__", ".")


def resolve_secret(reference: str | None, *, provider: str, required: bool = True) -> str | None:
    """Resolve ``env:NAME`` references; secrets are never written literally in config files."""
    if reference is None:
        if required:
            raise ConfigError(f'provider {provider!r} needs an api_key (e.g. "env:OPENAI_API_KEY")')
        return None
    if reference.startswith("env:"):
        variable = reference[4:]
        value = os.environ.get(variable)
        if not value and required:
            raise ConfigError(f"provider {provider!r} needs the environment variable {variable} to be set")
        return value
    return reference


def parse_arguments(raw: str) -> dict[str, Any]:
    """Tool arguments as sent by a model; malformed JSON is kept so the tool can report it."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}
