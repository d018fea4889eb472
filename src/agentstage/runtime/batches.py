"""Batches submitted by a door: every input gets a run at once, at most ``parallel`` execute together.

The batch itself (inputs in order, each with its run id or the reason it was rejected) is stored,
so its progress can be read from any process, also after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uuid6 import uuid7

from agentstage.core.events import utc_now
from agentstage.core.records import BatchRecord
from agentstage.errors import InvalidInputError, NotFoundError
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService


class BatchService:
    def __init__(self, runs: RunService):
        self.runs = runs

    async def submit(
        self, requests: Sequence[RunRequest], parallel: int, *, tenant: str = "default"
    ) -> BatchRecord:
        if not requests:
            raise InvalidInputError("a batch needs at least one input", code="empty_batch")
        started = await self.runs.start_batch(requests, parallel)
        items = [
            {"index": item.index, "run_id": item.record.id if item.record else None, "error": item.error}
            for item in started
        ]
        batch = BatchRecord(id=str(uuid7()), created_at=utc_now(), items=items, tenant=tenant)
        await self.runs.store.create_batch(batch)
        return batch

    async def progress(self, batch_id: str, tenant: str | None = None) -> dict[str, Any]:
        """Counts by state and every item's result, in input order."""
        batch = await self.runs.store.get_batch(batch_id)
        if batch is None or (tenant is not None and batch.tenant != tenant):
            raise NotFoundError(f"unknown batch {batch_id!r}", code="batch_not_found")
        results: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for item in batch.items:
            if item["run_id"] is None:
                result = {
                    "index": item["index"],
                    "run_id": None,
                    "status": "rejected",
                    "error": item["error"],
                }
            else:
                record = await self.runs.status(item["run_id"])
                result = {"index": item["index"], **record.result()}
            counts[result["status"]] = counts.get(result["status"], 0) + 1
            results.append(result)
        finished = sum(
            n for status, n in counts.items() if status in {"completed", "failed", "cancelled", "rejected"}
        )
        return {
            "batch_id": batch.id,
            "created_at": batch.created_at.isoformat(),
            "total": len(results),
            "finished": finished,
            "done": finished == len(results),
            "counts": counts,
            "results": results,
        }
