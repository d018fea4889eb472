"""Each score as the OpenTelemetry event ``gen_ai.evaluation.result`` (GenAI semantic conventions).

Emitted through opentelemetry-api's logs API: a no-op until an SDK logger provider is installed
(then exported wherever it sends logs). The event is tied to the evaluated run's trace, and to the
model call that produced the answer when the run recorded its span id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, SeverityNumber, get_logger_provider
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from agentstage import __version__

if TYPE_CHECKING:
    from agentstage.core.events import RunEvent
    from agentstage.evals.results import AttemptResult

EVENT_NAME = "gen_ai.evaluation.result"


class EvaluationEvents:
    def __init__(self, provider: LoggerProvider | None = None):
        self._provider = provider

    def emit(
        self, case_id: str, result: AttemptResult, events: Sequence[RunEvent] = (), eval_id: str = ""
    ) -> int:
        """One event per score of an attempt; returns how many were emitted."""
        provider = self._provider or get_logger_provider()
        logger = provider.get_logger("agentstage.evals", __version__)
        context = _run_context(result.trace_id, events)
        for score in result.scores:
            attributes: dict[str, Any] = {
                "gen_ai.evaluation.name": score.scorer,
                "gen_ai.evaluation.score.value": score.value,
                "gen_ai.evaluation.score.label": score.label,
                "gen_ai.evaluation.explanation": score.explanation[:2000],
                "agentstage.eval.case_id": case_id,
                "agentstage.eval.attempt": result.attempt,
                "agentstage.eval.passed": score.passed,
            }
            if eval_id:
                attributes["agentstage.eval.id"] = eval_id
            if result.run_id:
                attributes["agentstage.run_id"] = result.run_id
            if score.label == "error":
                attributes["error.type"] = "evaluation_error"
            logger.emit(
                event_name=EVENT_NAME,
                attributes=attributes,
                context=context,
                severity_number=SeverityNumber.INFO,
            )
        return len(result.scores)


def _run_context(trace_id: str | None, events: Sequence[RunEvent]) -> Context | None:
    """A context whose current span is the run's last model call (or nothing, without a trace id)."""
    span_id = next(
        (e.span_id for e in reversed(events) if e.type == "model.response" and e.span_id),
        next((e.span_id for e in reversed(events) if e.span_id), None),
    )
    if not trace_id or not span_id:
        return None
    try:
        span_context = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    except ValueError:
        return None
    if not span_context.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span_context))
