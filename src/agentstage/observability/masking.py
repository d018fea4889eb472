"""Masking of secrets before anything is recorded.

A value is masked when its *name* looks secret (key, token, password, …) or the value itself
looks like a credential (``sk-…``, a bearer token, a URL with a password). Masking is applied to
snapshots, the effective-config view and environment captures, so a secret never reaches the
store, a log line or a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

_SECRET_NAME = re.compile(r"(key|token|secret|passw(or)?d|credential|auth|cookie|session)", re.I)
_SECRET_VALUE = re.compile(
    r"^(sk-[A-Za-z0-9_-]{8,}|sk-ant-[A-Za-z0-9_-]{8,}|(bearer|basic)\s+\S{8,}|gh[pousr]_[A-Za-z0-9]{16,}"
    r"|xox[abps]-[A-Za-z0-9-]{8,}|AKIA[0-9A-Z]{16})$",
    re.I,
)
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I
)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def mask_value(value: str) -> str:
    """Mask a credential-looking string; hide only the password part of a URL."""
    if _SECRET_VALUE.match(value.strip()):
        return MASK
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)


def mask(data: Any, *, key: str = "") -> Any:
    """Return a copy of ``data`` with secrets masked. References like ``env:NAME`` stay visible:
    they name where a secret lives, not the secret."""
    if isinstance(data, Mapping):
        return {k: mask(v, key=str(k)) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [mask(item, key=key) for item in data]
    if isinstance(data, str):
        if data.startswith("env:"):
            return data
        if key and is_secret_name(key) and data:
            return MASK
        return mask_value(data)
    return data


def masked_environment(environ: Mapping[str, str], allowlist: list[str]) -> dict[str, str]:
    """The allow-listed variables that are set, each masked if it looks secret."""
    captured: dict[str, str] = {}
    for name in allowlist:
        if name in environ:
            value = environ[name]
            captured[name] = MASK if is_secret_name(name) else mask_value(value)
    return captured
