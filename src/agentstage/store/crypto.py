"""Encryption at rest: AES-256-GCM for every stored value that carries what users wrote or agents said.

Each value is sealed on its own, with a fresh random 96-bit nonce, and with associated data that
names its column and its row (``runs.input|<run id>``), so a value copied into another row or
column does not open. Each sealed value carries the id of the key that sealed it, so keys rotate:
the keyring's current key seals, older keys still open, and a value sealed by a key the keyring
lacks is named as such instead of failing as garbage. A key's id is derived from the key itself
(HMAC-SHA256), so an id can never be attached to the wrong key.

Stored forms, the same for both write paths and every database:

- a text column holds ``"\\x01v1:<key id>:<base64(nonce | ciphertext | tag)>"``. A plaintext value
  that itself starts with ``"\\x01"`` is stored with one more ``"\\x01"`` in front, so text a user
  typed can never pass for a sealed value (nor the other way round);
- a JSON column holds that token as a JSON string: plaintext JSON columns always hold an object
  or an array, so a string there is always sealed;
- a plaintext value holding a NUL character (U+0000), which PostgreSQL's text columns cannot hold
  (and SQLite's text functions stop at), is stored escaped: ``"\\x01e"``, then the value with each
  ``"\\x01"`` doubled and each NUL written ``"\\x010"``. The text around the NULs stays as it was,
  so a search still finds it.

Metadata (ids, status, tenant, timestamps, usage, cost) stays in the clear, so lists and filters
work without the key.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentstage.errors import ConfigError, StoreError

KEY_BYTES = 32
NONCE_BYTES = 12
MARK = "\x01"
VERSION = "v1"
PREFIX = f"{MARK}{VERSION}:"
ESCAPED = f"{MARK}e"  # a plaintext value with NUL in it (see the module docstring)
_ESCAPE_PAIR = re.compile(f"{MARK}(.)", re.DOTALL)
KEY_ID_CHARS = 8
_TOKEN_HEAD = len(PREFIX) + KEY_ID_CHARS + 1  # prefix, key id, ":"
_HEX = re.compile(r"[0-9a-fA-F]{64}")


def generate_key() -> str:
    """A new random key in the form ``store.encryption_key`` reads (base64 of 32 bytes)."""
    return binascii.b2a_base64(os.urandom(KEY_BYTES), newline=False).decode("ascii")


def parse_key(text: str, what: str) -> bytes:
    """Key material from its text form: base64 (standard or URL-safe) or hex of 32 random bytes.

    Errors name the setting and the length, never the value."""
    text = text.strip()
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    try:
        raw = binascii.a2b_base64(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))
    except binascii.Error:
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigError(
            f"{what} must be {KEY_BYTES} random bytes written as base64 (44 characters) or hex "
            f"(64 characters), not a {len(text)}-character value; `agent store generate-key` prints one",
            code="encryption_key_invalid",
        )
    return raw


def key_id(key: bytes) -> str:
    """A short, stable name for a key that reveals nothing about it."""
    return hmac.new(key, b"agentstage store key id", hashlib.sha256).hexdigest()[:KEY_ID_CHARS]


def token_key_id(token: str) -> str | None:
    """The key id a stored text value was sealed with; None when it is not sealed."""
    if token.startswith(PREFIX) and len(token) > _TOKEN_HEAD and token[_TOKEN_HEAD - 1] == ":":
        return token[len(PREFIX) : _TOKEN_HEAD - 1]
    return None


class Keyring:
    """The keys a store may use: at most one current key (seals and opens) and older keys (open only).

    An empty keyring means encryption is off: values are stored in the clear, and a sealed value
    read back is refused with an error that names the key it needs."""

    def __init__(self, current: bytes | None = None, older: Iterable[bytes] = ()):
        self._ciphers: dict[str, AESGCM] = {}
        self.current_id: str | None = None
        self._sealer: AESGCM | None = None
        if current is not None:
            self.current_id = key_id(current)
            self._sealer = self._ciphers[self.current_id] = AESGCM(current)
        for key in older:
            self._ciphers.setdefault(key_id(key), AESGCM(key))

    @property
    def encrypting(self) -> bool:
        return self._sealer is not None

    @property
    def key_ids(self) -> list[str]:
        """Every key id this keyring can open, the current one first."""
        return sorted(self._ciphers, key=lambda kid: kid != self.current_id)

    def can_open(self, kid: str) -> bool:
        return kid in self._ciphers

    # sealing and opening ------------------------------------------------------------------------

    def seal(self, text: str, column: str, row: str) -> str:
        """``text`` sealed with the current key, bound to its column and row."""
        assert self._sealer is not None and self.current_id is not None
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._sealer.encrypt(nonce, text.encode("utf-8"), f"{column}|{row}".encode())
        return (
            f"{PREFIX}{self.current_id}:{binascii.b2a_base64(nonce + sealed, newline=False).decode('ascii')}"
        )

    def open(self, token: str, column: str, row: str) -> str:
        kid = token_key_id(token)
        cipher = self._ciphers.get(kid) if kid is not None else None
        if cipher is None:
            raise self.missing_key(kid or "?", f" ({column} of {row!r})")
        try:
            blob = binascii.a2b_base64(token[_TOKEN_HEAD:])
            plain = cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], f"{column}|{row}".encode())
            return plain.decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise StoreError(
                f"{column} of {row!r} does not open with key {kid}: the stored value was altered or "
                "copied from another row",
                code="encrypted_value_invalid",
            ) from None

    def missing_key(self, kid: str, where: str = "") -> ConfigError:
        """The one error for a store (or a value, named by ``where``) that needs a key this keyring
        does not have."""
        if not self._ciphers:
            return ConfigError(
                f"the store holds data encrypted with key {kid}{where}, but encryption is not "
                "configured: set store.encryption_key to that key ('env:NAME' or 'file:/path')",
                code="encryption_key_missing",
            )
        return ConfigError(
            f"the store holds data encrypted with key {kid}{where}, which is not among the configured "
            f"keys ({', '.join(self.key_ids)}): set store.encryption_key to it, or list it in "
            "store.decryption_keys if it is an older key",
            code="encryption_key_unknown",
        )

    def prefix(self, kid: str | None, *, json_column: bool) -> str:
        """How a stored value sealed with ``kid`` (None: with any key) begins."""
        head = PREFIX if kid is None else f"{PREFIX}{kid}:"
        return '"\\u0001' + head[1:] if json_column else head

    # column forms ------------------------------------------------------------------------------

    def put_text(self, value: str, column: str, row: str) -> str:
        """What a text column stores for ``value``."""
        if self._sealer is not None:
            return self.seal(value, column, row)
        if "\x00" in value:
            return escape_nul(value)
        return MARK + value if value.startswith(MARK) else value

    def put_optional_text(self, value: str | None, column: str, row: str) -> str | None:
        return None if value is None else self.put_text(value, column, row)

    def get_text(self, stored: str | None, column: str, row: str) -> str | None:
        """A text column's value from what it stores."""
        if stored is None or not stored.startswith(MARK):
            return stored
        if stored.startswith(PREFIX):
            return self.open(stored, column, row)
        if stored.startswith(ESCAPED):
            return _ESCAPE_PAIR.sub(_unescaped, stored[len(ESCAPED) :])
        return stored[1:] if stored.startswith(MARK + MARK) else stored

    def put_json(self, json_text: str, column: str, row: str) -> str:
        """The JSON text a JSON column stores for a value already serialised as ``json_text``."""
        if self._sealer is None:
            return json_text
        return f'"\\u0001{self.seal(json_text, column, row)[1:]}"'

    def put_json_value(self, value: Any, column: str, row: str) -> Any:
        """What to hand SQLAlchemy for a JSON column (it serialises the result itself)."""
        if self._sealer is None:
            return value
        return self.seal(dump(value), column, row)

    def get_json_text(self, stored: Any, column: str, row: str) -> str | None:
        """A sealed JSON column's JSON text, or None when ``stored`` (as SQLAlchemy parsed it) is
        in the clear."""
        if isinstance(stored, str) and stored.startswith(PREFIX):
            return self.open(stored, column, row)
        return None

    def get_json(self, stored: Any, column: str, row: str) -> Any:
        sealed = self.get_json_text(stored, column, row)
        return stored if sealed is None else json.loads(sealed)


def escape_nul(text: str) -> str:
    """The stored form of plaintext ``text`` that holds a NUL character (no NUL in it)."""
    return ESCAPED + text.replace(MARK, MARK + MARK).replace("\x00", MARK + "0")


def escape_nul_needle(text: str) -> str:
    """What a search for ``text`` looks for among stored values: text with a NUL in it can only be
    part of a value that holds one, so it is looked for in that value's escaped form."""
    return text.replace(MARK, MARK + MARK).replace("\x00", MARK + "0") if "\x00" in text else text


def _unescaped(pair: re.Match[str]) -> str:
    return "\x00" if pair.group(1) == "0" else pair.group(1)


# One encoder for every value: ``json.dumps`` with options builds a new encoder per call, and span
# and event rows call this for every row they write.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dump(value: Any) -> str:
    """The compact JSON text the store keeps (the same form as the hand-written SQLite path)."""
    return _ENCODER.encode(value)
