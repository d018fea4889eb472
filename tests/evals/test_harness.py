"""The harness in-process on a real RunService: trajectory scorers over real event logs, a failing
scorer that does not stop the eval, and each score emitted as an OpenTelemetry event."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from agentstage.evals import EvalHarness, EvalOptions, Sample, Score, Scorer, load_dataset, register
from agentstage.evals.scorers import SCORERS
from agentstage.evals.telemetry import EVENT_NAME, EvaluationEvents
from agentstage.runtime.service import RunService

pytestmark = pytest.mark.anyio

TWO_TOOLS = {
    "native_tools": False,
    "rules": [
        {"match": "Observation from math.calculate", "json": {"answer": "There are 10 products; twice that is 20."}},
        {"match": "Observation from sql.query", "json": {"tool": "math.calculate", "arguments": {"expression": "10 * 2"}}},
        {"match": "twice", "json": {"tool": "sql.query", "arguments": {"query": "SELECT count(*) FROM products"}}},
    ],
    "responses": [{"text": "Hello."}],
}  # fmt: skip


class Exploding(Scorer):
    name = "exploding"
    summary = "Always raises (a broken plugin)."

    async def score(self, sample: Sample) -> Score:
        raise RuntimeError("plugin bug")


@pytest.fixture
def exploding() -> Iterator[None]:
    register(Exploding)
    yield
    SCORERS.pop("exploding")


def dataset_file(tmp_path: Path, cases: list[dict[str, Any]]) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(json.dumps(c) for c in cases), encoding="utf-8")
    return path


async def test_trajectory_scorers_read_the_runs_own_events(
    make_service: Callable[..., RunService], tmp_path: Path, exploding: None
) -> None:
    query = {"query": "Count the products, then twice that", "mode": "react"}
    dataset = load_dataset(
        dataset_file(
            tmp_path,
            [
                {
                    "id": "two-tools",
                    "input": query,
                    "expected": {"type": "numeric", "content": 20},
                    "scorers": [
                        {"type": "tool_used", "tools": ["sql.query", "math.calculate:v1"]},
                        {"type": "tool_used", "tools": ["web.search"], "match": "any"},
                        {"type": "tool_sequence", "sequence": ["sql.query", "math.calculate"], "exact": True},
                        {"type": "tool_sequence", "sequence": ["math.calculate", "sql.query"]},
                        {"type": "max_steps", "max_steps": 4},
                        "exploding",
                    ],
                }
            ],
        )
    )
    assert dataset.problems == []
    async with make_service(TWO_TOOLS) as service:
        [case] = await EvalHarness(service).run(dataset)
    attempt = case.attempts[0]
    assert attempt.tools == ["sql.query:v1", "math.calculate:v1"] and attempt.steps == 5
    verdicts = [(s.scorer, s.passed) for s in attempt.scores]
    assert verdicts == [
        ("numeric", True),
        ("tool_used", True),
        ("tool_used", False),
        ("tool_sequence", True),
        ("tool_sequence", False),
        ("max_steps", False),
        ("exploding", False),
    ]
    assert (
        attempt.scores[-1].label == "error" and "RuntimeError: plugin bug" in attempt.scores[-1].explanation
    )
    assert attempt.scores[5].explanation == "5 steps > 4"
    assert not case.passed and case.values["scorer.numeric"] == 1.0


async def test_each_score_is_an_opentelemetry_evaluation_event(
    make_service: Callable[..., RunService], tmp_path: Path
) -> None:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # the SDK leaves __init__ unannotated
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    cases = [
        {"id": "hello", "input": {"query": "Say hello", "mode": "chat"}, "expected": {"type": "contains", "content": "Hello"},
         "constraints": {"max_tokens": 1}},
        {"id": "nope", "input": {"query": "Say goodbye", "mode": "chat"}, "expected": {"type": "exact", "content": "Bye."}},
    ]  # fmt: skip
    dataset = load_dataset(dataset_file(tmp_path, cases))
    async with make_service(TWO_TOOLS) as service:
        harness = EvalHarness(service, EvalOptions(parallel=2), telemetry=EvaluationEvents(provider))
        results = await harness.run(dataset)
        records = {a.run_id: await service.status(a.run_id) for c in results for a in c.attempts if a.run_id}
    logs = [entry.log_record for entry in exporter.get_finished_logs()]
    assert len(logs) == 3
    by_name = {(log.attributes or {})["agentstage.eval.case_id"]: log for log in logs if log.attributes and
               log.attributes["gen_ai.evaluation.name"] in ("contains", "exact")}  # fmt: skip
    hello, nope = by_name["hello"], by_name["nope"]
    assert hello.event_name == EVENT_NAME and nope.event_name == EVENT_NAME
    assert dict(hello.attributes or {}) == {
        "gen_ai.evaluation.name": "contains",
        "gen_ai.evaluation.score.value": 1.0,
        "gen_ai.evaluation.score.label": "pass",
        "gen_ai.evaluation.explanation": "the answer contains 'Hello'",
        "agentstage.eval.case_id": "hello",
        "agentstage.eval.attempt": 1,
        "agentstage.eval.passed": True,
        "agentstage.eval.id": harness.eval_id,
        "agentstage.run_id": results[0].attempts[0].run_id,
    }
    assert (nope.attributes or {})["gen_ai.evaluation.score.label"] == "fail"
    for result in results:
        run_id = result.attempts[0].run_id
        assert run_id is not None
        trace_id = records[run_id].trace_id
        assert trace_id is not None
        linked = [log for log in logs if (log.attributes or {})["agentstage.run_id"] == run_id]
        assert linked and all(log.trace_id == int(trace_id, 16) and log.span_id for log in linked)
    tokens = next(log for log in logs if (log.attributes or {})["gen_ai.evaluation.name"] == "tokens")
    assert (tokens.attributes or {})["gen_ai.evaluation.score.value"] == 0.0


async def test_without_an_sdk_the_events_are_a_no_op(
    make_service: Callable[..., RunService], tmp_path: Path
) -> None:
    dataset = load_dataset(
        dataset_file(
            tmp_path,
            [
                {
                    "id": "a",
                    "input": {"query": "hi", "mode": "chat"},
                    "expected": {"type": "contains", "content": "Hello"},
                }
            ],
        )
    )
    async with make_service(TWO_TOOLS) as service:
        [case] = await EvalHarness(service).run(dataset)
    assert case.passed
