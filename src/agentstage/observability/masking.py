"""The one masker: secrets are replaced by ``***`` before anything is recorded or shown.

Everything that leaves a run goes through here — events (before they are stored or streamed),
stored records, snapshots, the effective-config view, environment captures, log lines and span
attributes — so a secret never reaches the store, a log pipeline, a trace backend or a terminal.

Three things make a value secret:

- its *name* looks secret (``api_key``, ``token``, ``password``, …): the whole value is masked
  (:func:`mask`, for structured data such as configuration);
- its *shape* is a credential wherever it appears in text: provider keys (``sk-…``), our own API
  keys (``ags_…``), GitHub/Slack/AWS tokens, JWTs, the token after ``Bearer``/``Basic``, the
  password in a URL, and the value in ``password=…``/``API_KEY: …`` assignments;
- it is *known*: the values of environment variables named like ``*KEY*``, ``*TOKEN*``,
  ``*SECRET*``, ``*PASSWORD*``, of variables that the configuration references (``env:NAME``), and
  literal values under secret-looking keys in the configuration are remembered
  (:func:`remember_secrets`) and masked wherever they occur, whatever their shape.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
MIN_KNOWN_LENGTH = 6  # shorter values ("1", "true") are too common to mask everywhere

_SECRET_NAME = re.compile(r"(key|token|secret|passw(or)?d|credential|auth|cookie|session)", re.I)
# Environment variables whose values are remembered: the naming rule, narrower than the
# structural one above (SSH_AUTH_SOCK or SESSION_MANAGER hold paths, not secrets).
_SECRET_VARIABLE = re.compile(r"(KEY|TOKEN|SECRET|PASSW(OR)?D|CREDENTIAL)", re.I)
_SECRET_VALUE = re.compile(
    r"^(sk-[A-Za-z0-9_-]{8,}|sk-ant-[A-Za-z0-9_-]{8,}|(bearer|basic)\s+\S{8,}|gh[pousr]_[A-Za-z0-9]{16,}"
    r"|xox[abps]-[A-Za-z0-9-]{8,}|AKIA[0-9A-Z]{16})$",
    re.I,
)
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s\"']*):(?P<password>[^@/\s\"']+)@", re.I
)
# Credentials inside free text (and inside JSON text: no pattern crosses a quote or a backslash).
# Each family runs only when one of its literal triggers occurs in the lower-cased text, so the
# common case (an event with no credential in it) costs a few substring searches, not a regex scan.
_SHAPES = re.compile(
    r"\bsk-(?:ant-)?[A-Za-z0-9_-]{16,}|\bags_[A-Za-z0-9_-]{20,}|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bxox[abps]-[A-Za-z0-9-]{10,}|\bAKIA[0-9A-Z]{16}\b"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
)
_AUTH_SCHEME = re.compile(r"(?P<scheme>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}", re.I)
_ASSIGNMENT = re.compile(
    r"(?P<name>(?:passw(?:or)?d|secret|key|token)[A-Za-z0-9_]*)(?P<sep>\s*=\s*|\s*:\s+)"
    r"(?![0-9.]+(?:[\s\"'\\,;&]|$))(?P<value>[^\s\"'\\,;&]{4,})",
    re.I,
)


def _assignment(match: re.Match[str]) -> str:
    value = match["value"]
    if value.startswith("env:") or value == MASK:
        return match[0]
    return f"{match['name']}{match['sep']}{MASK}"


_FAMILIES: list[tuple[tuple[str, ...], re.Pattern[str], Any]] = [
    (("sk-", "ags_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "akia", "eyj"), _SHAPES, MASK),
    (("bearer", "basic"), _AUTH_SCHEME, lambda m: f"{m['scheme']}{MASK}"),
    (("://",), _URL_PASSWORD, lambda m: f"{m['scheme']}{m['user']}:{MASK}@"),
    (("passw", "secret", "key=", "key: ", "key =", "token=", "token: ", "token ="), _ASSIGNMENT, _assignment),
]
_TRIGGERS = tuple(trigger for triggers, _, _ in _FAMILIES for trigger in triggers)

_lock = threading.Lock()
_known: frozenset[str] = frozenset()  # remembered secret values and their JSON-escaped forms
# Texts that recur (the system prompt and tool definitions of every model request) and what they
# become masked; emptied whenever the remembered secrets change.
_REPEATED_MIN_CHARS = 256
_REPEATED_SIZE = 1024
_repeated: dict[str, str] = {}


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def remember(values: Iterable[str]) -> None:
    """Mask these values wherever they appear from now on (process-wide)."""
    global _known
    found = {v for v in values if isinstance(v, str) and len(v.strip()) >= MIN_KNOWN_LENGTH}
    escaped = {json.dumps(v, ensure_ascii=False)[1:-1] for v in found}
    escaped |= {json.dumps(v)[1:-1] for v in found}
    with _lock:
        _known = _known | found | escaped
        _repeated.clear()


def forget_all() -> None:
    """Drop every remembered value (tests that change the environment between services)."""
    global _known
    with _lock:
        _known = frozenset()
        _repeated.clear()


def remember_secrets(environ: Mapping[str, str], config: Any = None) -> None:
    """Remember the values of secret-named environment variables, of variables the configuration
    references (``env:NAME``), and literal values under secret-looking keys in ``config``."""
    values = [value for name, value in environ.items() if _SECRET_VARIABLE.search(name)]
    values += list(_config_secrets(config, "", environ))
    remember(values)


def _config_secrets(data: Any, key: str, environ: Mapping[str, str]) -> Iterable[str]:
    if isinstance(data, Mapping):
        for name, value in data.items():
            yield from _config_secrets(value, str(name), environ)
    elif isinstance(data, list | tuple):
        for item in data:
            yield from _config_secrets(item, key, environ)
    elif isinstance(data, str):
        if data.startswith("env:"):
            referenced = environ.get(data[4:])
            if referenced:
                yield referenced
        elif key and is_secret_name(key):
            yield data


def redact(text: str) -> str:
    """``text`` with every remembered secret and every credential-shaped part replaced by ``***``."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    for trigger in _TRIGGERS:  # the fast path: a plain loop of substring searches
        if trigger in lowered:
            break
    else:
        return text
    for triggers, pattern, replacement in _FAMILIES:
        if any(trigger in lowered for trigger in triggers):
            text = pattern.sub(replacement, text)
    return text


def redact_repeated(text: str) -> str:
    """:func:`redact`, remembered for long texts: for pieces of text that come back again and
    again (the same prompt in every run), the scan is done once."""
    if len(text) < _REPEATED_MIN_CHARS:
        return redact(text)
    found = _repeated.get(text)
    if found is None:
        known = _known
        found = redact(text)
        with _lock:
            if _known is known:  # not made with secrets that changed meanwhile
                if len(_repeated) >= _REPEATED_SIZE:
                    _repeated.clear()
                _repeated[text] = found
    return found


def redact_json(text: str) -> str | None:
    """JSON text with secrets masked (still valid JSON), or None when there was nothing to mask —
    the fast path every event takes."""
    masked = redact(text)
    return None if masked == text else masked


def mask_value(value: str) -> str:
    """Mask a credential-looking string whole; otherwise redact the secrets inside it."""
    if _SECRET_VALUE.match(value.strip()):
        return MASK
    return redact(value)


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
