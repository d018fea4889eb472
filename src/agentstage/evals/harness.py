"""Running an eval: each case (times ``repeat``) is a normal run through the RunService.

The harness is a client of the runtime like any door: it starts runs with ``RunService.start``,
waits for them, reads their events, and scores them. ``rescore`` does the same from runs an
earlier eval recorded, reading them back by id, so no model is called. Results are handed out
case by case (``on_case``) so a caller can persist them as they come: an interrupted eval keeps
everything that finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from uuid6 import uuid7

from agentstage.errors import AgentstageError, NotFoundError
from agentstage.evals.dataset import Dataset, LoadedCase
from agentstage.evals.metrics import case_values
from agentstage.evals.results import AttemptResult, AttemptStatus, CaseResult
from agentstage.evals.scorers import JudgeVerdict, Sample, Score, Scorer
from agentstage.evals.telemetry import EvaluationEvents
from agentstage.runtime.observe import through
from agentstage.runtime.requests import RunOptions, RunRequest

if TYPE_CHECKING:
    from agentstage.core.events import RunEvent
    from agentstage.core.records import RunRecord
    from agentstage.runtime.service import RunService


@dataclass
class EvalOptions:
    profile: str | None = None
    mode: str | None = None
    parallel: int = 4
    repeat: int = 1
    judge_profile: str | None = None


@dataclass
class RecordedAttempt:
    """Where an earlier eval's attempt lives: its run, and the judge runs that graded it."""

    attempt: int
    run_id: str | None
    judge_run_ids: list[str] = field(default_factory=list)


AttemptCallback = Callable[[LoadedCase, AttemptResult], None]
CaseCallback = Callable[[CaseResult], None]


class EvalHarness:
    def __init__(
        self,
        service: RunService,
        options: EvalOptions | None = None,
        *,
        telemetry: EvaluationEvents | None = None,
        on_attempt: AttemptCallback | None = None,
        on_case: CaseCallback | None = None,
        eval_id: str | None = None,
    ):
        self.service = service
        self.options = options or EvalOptions()
        if self.options.parallel < 1 or self.options.repeat < 1:
            raise ValueError("parallel and repeat must be at least 1")
        self.eval_id = eval_id or str(uuid7())
        self.telemetry = telemetry or EvaluationEvents()
        self.on_attempt = on_attempt
        self.on_case = on_case
        self.interrupted = False
        self._gate = asyncio.Semaphore(self.options.parallel)
        self._running: set[str] = set()
        self._stoppers: list[asyncio.Task[None]] = []

    # running ------------------------------------------------------------------------------------

    async def run(self, dataset: Dataset) -> list[CaseResult]:
        """Run every case ``repeat`` times; results in dataset order."""

        async def case(loaded: LoadedCase) -> CaseResult:
            numbers = range(1, self.options.repeat + 1)
            attempts = await asyncio.gather(*(self._live(loaded, n) for n in numbers))
            return self._finish_case(loaded, list(attempts))

        return list(await asyncio.gather(*(case(c) for c in dataset.cases)))

    async def rescore(self, dataset: Dataset, recorded: dict[str, list[RecordedAttempt]]) -> list[CaseResult]:
        """Score the runs an earlier eval recorded (by case id) with this dataset's scorers, calling no model."""

        async def case(loaded: LoadedCase) -> CaseResult:
            earlier = recorded.get(loaded.id) or [RecordedAttempt(1, None)]
            attempts = await asyncio.gather(*(self._replayed(loaded, r) for r in earlier))
            return self._finish_case(loaded, list(attempts))

        return list(await asyncio.gather(*(case(c) for c in dataset.cases)))

    def stop(self, reason: str = "the eval was interrupted") -> None:
        """Start no more runs and cancel those in flight; what finished is kept."""
        if self.interrupted:
            return
        self.interrupted = True
        for run_id in list(self._running):
            self._stoppers.append(asyncio.get_running_loop().create_task(self._cancel(run_id, reason)))

    async def _cancel(self, run_id: str, reason: str) -> None:
        with contextlib.suppress(AgentstageError):
            await self.service.cancel(run_id, reason=reason)

    async def _live(self, loaded: LoadedCase, number: int) -> AttemptResult:
        async with self._gate:
            if self.interrupted:
                return self._report(
                    loaded, _not_run(number, "cancelled", "the eval was interrupted before this run")
                )
            case = loaded.case
            request = RunRequest(
                input=case.input.query,
                mode=case.input.mode.value if case.input.mode else self.options.mode,
                profile=self.options.profile,
                options=case.input.options,
                correlation_id=f"eval-{self.eval_id}",
            )
            try:
                with through("eval"):  # counted and traced as the eval's, whichever program runs it
                    record = await self.service.start(request)
            except AgentstageError as error:
                return self._report(loaded, _not_run(number, "rejected", error.message, error.code))
            self._running.add(record.id)
            try:
                # Following the run's stream collects its events as they happen, with no store read.
                events = [event async for event in self.service.stream(record.id)]
                record = await self.service.wait(record.id)
            finally:
                self._running.discard(record.id)
            judge = _LiveJudge(self.service, self.options.judge_profile, self.eval_id)
            return await self._scored(loaded, number, record, events, judge)

    async def _replayed(self, loaded: LoadedCase, recorded: RecordedAttempt) -> AttemptResult:
        async with self._gate:
            if recorded.run_id is None:
                message = "the earlier eval has no run of this case"
                return self._report(loaded, _not_run(recorded.attempt, "missing", message, "not_recorded"))
            try:
                record = await self.service.status(recorded.run_id)
                events = await self.service.events(recorded.run_id)
            except NotFoundError:
                message = f"run {recorded.run_id!r} is not in the store"
                return self._report(loaded, _not_run(recorded.attempt, "missing", message, "run_not_found"))
            if not record.status.terminal:
                message = f"run {recorded.run_id!r} has not finished ({record.status.value})"
                return self._report(
                    loaded, _not_run(recorded.attempt, "missing", message, "run_not_finished")
                )
            judge = _RecordedJudge(self.service, list(recorded.judge_run_ids))
            return await self._scored(loaded, recorded.attempt, record, events, judge)

    # scoring --------------------------------------------------------------------------------------

    async def _scored(
        self, loaded: LoadedCase, number: int, record: RunRecord, events: Sequence[RunEvent], judge: _Judge
    ) -> AttemptResult:
        error = {"code": record.error_code, "message": record.error_message} if record.error_code else None
        sample = Sample(
            case=loaded.case,
            output=record.output or "",
            status=record.status.value,
            run_id=record.id,
            error=error,
            usage=dict(record.usage),
            cost=record.cost,
            latency_ms=record.timings()["duration_ms"],
            events=events,
            judge=judge,
        )
        scores = [await _safely(scorer, sample) for scorer in loaded.scorers]
        expected = loaded.case.expected_text()
        result = AttemptResult(
            attempt=number,
            run_id=record.id,
            trace_id=record.trace_id,
            status=record.status.value,
            output=record.output,
            error=error,
            usage=dict(record.usage),
            cost=record.cost,
            latency_ms=sample.latency_ms,
            tools=sample.tool_calls(),
            steps=len(sample.steps()),
            expected_tokens=math.ceil(len(expected) / 4) if expected else None,
            scores=scores,
            passed=sample.status == "completed" and all(s.passed for s in scores),
            score=round(statistics.fmean(s.value for s in scores), 6) if scores else 0.0,
        )
        self.telemetry.emit(loaded.id, result, events, self.eval_id)
        return self._report(loaded, result)

    def _report(self, loaded: LoadedCase, result: AttemptResult) -> AttemptResult:
        if self.on_attempt is not None:
            self.on_attempt(loaded, result)
        return result

    def _finish_case(self, loaded: LoadedCase, attempts: list[AttemptResult]) -> CaseResult:
        case = loaded.case
        result = CaseResult(
            case_id=case.id,
            category=case.category,
            source=loaded.source,
            query=case.input.query,
            expected=case.expected,
            scorers=[s.name for s in loaded.scorers],
            attempts=sorted(attempts, key=lambda a: a.attempt),
        ).finish()
        result.values = case_values(result)
        if self.on_case is not None:
            self.on_case(result)
        return result


async def _safely(scorer: Scorer, sample: Sample) -> Score:
    """A scorer that raises scores 0 with the reason; it never stops the eval."""
    try:
        return await scorer.score(sample)
    except Exception as error:  # a scorer (possibly a plugin) may fail in any way
        return Score(
            scorer=scorer.name,
            value=0.0,
            passed=False,
            label="error",
            explanation=f"the scorer failed: {type(error).__name__}: {error}",
        )


def _not_run(number: int, status: AttemptStatus, message: str, code: str | None = None) -> AttemptResult:
    return AttemptResult(
        attempt=number,
        status=status,
        error={"code": code or status, "message": message},
    )


class _Judge:
    async def __call__(self, prompt: str, profile: str | None) -> JudgeVerdict:
        raise NotImplementedError


class _LiveJudge(_Judge):
    """Grades with a normal chat run (no tools) of the judge profile."""

    def __init__(self, service: RunService, default_profile: str | None, eval_id: str):
        self.service = service
        self.default_profile = default_profile
        self.eval_id = eval_id

    async def __call__(self, prompt: str, profile: str | None) -> JudgeVerdict:
        request = RunRequest(
            input=prompt,
            mode="chat",
            profile=profile or self.default_profile,
            options=RunOptions(tools=[]),
            correlation_id=f"eval-{self.eval_id}-judge",
        )
        try:
            with through("eval"):
                record = await self.service.run(request)
        except AgentstageError as error:
            return JudgeVerdict(None, "", "rejected", error.message)
        return JudgeVerdict(record.id, record.output or "", record.status.value, record.error_message)


class _RecordedJudge(_Judge):
    """Hands back the verdicts an earlier eval's judge runs gave, in the order they were asked for."""

    def __init__(self, service: RunService, run_ids: list[str]):
        self.service = service
        self.run_ids = run_ids

    async def __call__(self, prompt: str, profile: str | None) -> JudgeVerdict:
        if not self.run_ids:
            return JudgeVerdict(
                None, "", "missing", "no recorded judge verdict; re-run the eval without --replay"
            )
        run_id = self.run_ids.pop(0)
        try:
            record = await self.service.status(run_id)
        except NotFoundError:
            return JudgeVerdict(run_id, "", "missing", f"judge run {run_id!r} is not in the store")
        return JudgeVerdict(run_id, record.output or "", record.status.value, record.error_message)
