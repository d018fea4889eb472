"""The one owner of stopping a run: a cancel from any door or process, or the loss of its writes.

Whoever wants a run stopped calls :meth:`RunControl.cancel` (or :meth:`RunControl.fail`); the
run's supervisor is the only one that acts on it: it cancels the run's work, gives it a moment to
wind down, and writes the ending. Tools see the same signal through their context, so a tool that
runs in a thread or a subprocess can notice it and stop.
"""

from __future__ import annotations

import asyncio

from agentstage.core.events import ErrorInfo


class RunControl:
    def __init__(self) -> None:
        self.signal = asyncio.Event()
        self.reason: str | None = None
        self.failure: ErrorInfo | None = None

    @property
    def requested(self) -> bool:
        return self.signal.is_set()

    def cancel(self, reason: str) -> bool:
        """Ask the run to stop as ``cancelled``; only the first request counts. Idempotent."""
        if self.signal.is_set():
            return False
        self.reason = reason
        self.signal.set()
        return True

    def fail(self, error: ErrorInfo) -> None:
        """Stop the run as ``failed`` with ``error`` (this wins over a cancel that came first)."""
        self.failure = error
        self.signal.set()
