"""Secret references: ``env:NAME`` (an environment variable) or ``file:/path`` (a file's content).

Secrets are never written in config files; a reference says where one lives. Errors name the
reference, never the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentstage.errors import ConfigError


def resolve_reference(reference: str, what: str) -> str:
    if reference.startswith("env:"):
        name = reference[4:]
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"{what} refers to the environment variable {name}, which is not set")
        return value
    if reference.startswith("file:"):
        path = Path(reference[5:]).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"{what}: cannot read {str(path)!r}: {error.strerror}") from None
        if not value:
            raise ConfigError(f"{what}: {str(path)!r} is empty")
        return value
    raise ConfigError(f"{what} must be a reference ('env:NAME' or 'file:/path'), not a literal value")
