"""Reading a run's trace back from the store: its spans, arranged as a tree.

Observation keeps what a trace is made of in the store — the run's events, its tool timings, the
doors' spans — and derives the run's spans from them (see ``agentstage.observability``), so a
trace can be shown with no collector running. A run's trace is its own spans plus the door spans
of its trace that led to it (the HTTP request that started it); another tenant's run is not found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentstage.core.records import SpanRecord
from agentstage.runtime.observe import Telemetry
from agentstage.runtime.service import RunService


@dataclass
class SpanNode:
    span: SpanRecord
    children: list[SpanNode] = field(default_factory=list)

    def walk(self, depth: int = 0) -> list[tuple[int, SpanRecord]]:
        rows = [(depth, self.span)]
        for child in self.children:
            rows.extend(child.walk(depth + 1))
        return rows


def arrange(spans: list[SpanRecord]) -> list[SpanNode]:
    """The spans as trees, children in start order; a span whose parent is not here is a root."""
    nodes = {span.span_id: SpanNode(span) for span in spans}
    roots: list[SpanNode] = []
    for node in sorted(nodes.values(), key=lambda n: (n.span.start_ns, n.span.end_ns)):
        parent = nodes.get(node.span.parent_span_id or "")
        (parent.children if parent is not None and parent is not node else roots).append(node)
    return roots


class TraceService:
    def __init__(self, runs: RunService, telemetry: Telemetry):
        self.runs = runs
        self.telemetry = telemetry

    async def spans(self, run_id: str, tenant: str | None = None) -> list[SpanRecord]:
        """Every span of the run (and the door spans that started it), oldest first."""
        record = await self.runs.status(run_id, tenant)
        return await self.telemetry.spans(run_id, record.trace_id)

    async def tree(self, run_id: str, tenant: str | None = None) -> list[SpanNode]:
        return arrange(await self.spans(run_id, tenant))
