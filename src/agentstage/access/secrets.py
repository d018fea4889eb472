"""Secret references: ``env:NAME`` (an environment variable) or ``file:/path`` (a file's content).

Secrets are never written in config files; a reference says where one lives. Errors name the
reference, never the value. A file that others on the host may read (or change) is used, with a
warning naming it and the fix, as ssh does for a private key: the store's key in a world-readable
file makes encryption at rest protect nothing from the host's other users.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from agentstage.errors import ConfigError

log = logging.getLogger("agentstage.security")
_warned: set[str] = set()


def loose_permissions(path: Path) -> str | None:
    """Who besides the owner may read or write ``path`` ("group", "others", "group and others")."""
    if os.name != "posix":
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    who = [name for name, bits in (("group", stat.S_IRWXG), ("others", stat.S_IRWXO)) if mode & bits]
    return " and ".join(who) or None


def warn_if_exposed(path: Path, what: str) -> None:
    """Log once per file and process when ``path`` is open to group or others."""
    who = loose_permissions(path)
    key = str(path.resolve()) if who else ""
    if who is None or key in _warned:
        return
    _warned.add(key)
    mode = stat.S_IMODE(path.stat().st_mode)
    log.warning(
        "%s: %r is open to %s (mode %04o); anyone who can read it has the secret. Run: chmod 600 %s",
        what, str(path), who, mode, path,
    )  # fmt: skip


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
        warn_if_exposed(path, what)
        return value
    raise ConfigError(f"{what} must be a reference ('env:NAME' or 'file:/path'), not a literal value")
