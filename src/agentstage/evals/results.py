"""What an eval produces per case: one :class:`AttemptResult` per run, grouped in a :class:`CaseResult`.

These are the records written to ``results/*.run.json`` and into ``report.json``; ``--replay`` and
``agent eval compare`` read them back, so they are versioned with the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentstage.evals.scorers.base import Score

RESULT_KIND = "agentstage.eval.case"
AttemptStatus = Literal["completed", "failed", "cancelled", "rejected", "missing"]


class AttemptResult(BaseModel):
    """One run of one case, and its scores. ``status`` is the run's, or ``rejected`` (the run could not
    start) or ``missing`` (re-scoring found no recorded run)."""

    attempt: int = 1
    run_id: str | None = None
    trace_id: str | None = None
    status: AttemptStatus
    output: str | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    cost: float = 0.0
    latency_ms: float | None = None
    tools: list[str] = Field(default_factory=list)
    steps: int = 0
    expected_tokens: int | None = None
    scores: list[Score] = Field(default_factory=list)
    passed: bool = False
    score: float = 0.0

    def score_of(self, scorer: str) -> Score | None:
        return next((s for s in self.scores if s.scorer == scorer), None)

    @property
    def total_tokens(self) -> int:
        usage = self.usage
        return int(usage.get("total_tokens", usage.get("input_tokens", 0) + usage.get("output_tokens", 0)))


class CaseResult(BaseModel):
    kind: str = RESULT_KIND
    case_id: str
    category: str
    source: str = ""
    query: str
    expected: dict[str, Any] = Field(default_factory=dict)
    scorers: list[str] = Field(default_factory=list)
    attempts: list[AttemptResult]
    passed: bool = False
    pass_rate: float = 0.0
    score: float = 0.0
    values: dict[str, float] = Field(default_factory=dict, description="Per-case metric values, for compare.")

    def finish(self) -> CaseResult:
        """Fill the case-level verdicts: passed only when every attempt passed."""
        n = len(self.attempts)
        self.pass_rate = round(sum(a.passed for a in self.attempts) / n, 6) if n else 0.0
        self.passed = bool(n) and all(a.passed for a in self.attempts)
        self.score = round(sum(a.score for a in self.attempts) / n, 6) if n else 0.0
        return self


def result_file_name(case_id: str) -> str:
    """A safe file name for a case id; ids that are not already safe get a short hash to stay unique."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", case_id).strip(".-")[:80] or "case"
    if slug != case_id:
        slug += "-" + hashlib.sha256(case_id.encode()).hexdigest()[:8]
    return f"{slug}.run.json"


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_case(directory: Path, result: CaseResult) -> Path:
    path = directory / result_file_name(result.case_id)
    write_json(path, result.model_dump(mode="json"))
    return path
