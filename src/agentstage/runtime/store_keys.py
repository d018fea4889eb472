"""Encryption at rest as operators manage it: a new key, where the store stands, and rotation.

``agent store`` calls this; the work itself is the store's (see ``store/rekey.py``)."""

from __future__ import annotations

from collections.abc import Callable

from agentstage.store.base import KeyReport, RekeyResult, RunStore
from agentstage.store.crypto import generate_key

__all__ = ["KeyReport", "RekeyResult", "StoreKeyService"]


class StoreKeyService:
    def __init__(self, store: RunStore):
        self.store = store

    @staticmethod
    def new_key() -> str:
        """A fresh random key, in the form ``store.encryption_key`` reads."""
        return generate_key()

    async def report(self) -> KeyReport:
        return await self.store.key_report()

    async def rotate(self, progress: Callable[[str, int], None] | None = None) -> RekeyResult:
        """Re-seal every stored value with the current key (none configured: store it in the clear)."""
        return await self.store.reencrypt(progress)
