"""``agent eval`` end to end: the real executable, a real SQLite store, the scripted provider."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from agentstage.runtime.wiring import build_service
from agentstage.settings import load_settings
from conftest import Cli

from .conftest import FAILING, PASSING, Evaluated, configure, write_dataset


def stored_runs(cli: Cli, run_ids: list[str]) -> tuple[dict[str, Any], int]:
    """Read runs back from the store the CLI wrote, through the run service: {id: record}, total runs."""

    async def read() -> tuple[dict[str, Any], int]:
        settings = load_settings(environ={"AGENT_HOME": str(cli.home)})
        async with build_service(settings) as service:
            records = {run_id: await service.status(run_id) for run_id in run_ids}
            return records, await service.count_runs()

    return asyncio.run(read())


def attempts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["case_id"]: c["attempts"][0] for c in report["cases"]}


def test_the_report_holds_the_right_numbers_and_the_exit_code_is_1(evaluated: Evaluated) -> None:
    done, report = evaluated.done, evaluated.report
    assert done.returncode == 1, done.stderr
    assert "gate every case passes (no --fail-under given): FAIL (0.625 < 1)" in done.stderr
    assert {c["case_id"]: c["passed"] for c in report["cases"]} == {
        i: i in PASSING for i in PASSING | FAILING
    }
    assert report["summary"] == {
        "cases": 8, "passed": 5, "failed": 3, "pass_rate": 0.625, "attempts": 8, "attempts_passed": 5,
        "run_errors": 1, "total_tokens": 120, "total_cost": 0.0,
    }  # fmt: skip
    metrics = report["metrics"]
    # 5 of 8: the Wilson 95% interval is 30.57% to 86.32%.
    assert metrics["accuracy"]["value"] == 0.625 and metrics["accuracy"]["n"] == 8
    assert metrics["accuracy"]["ci"] == pytest.approx([0.30574, 0.86317], abs=1e-4)
    assert metrics["error_rate"]["value"] == 0.125
    assert metrics["schema_compliance"] == {
        "value": 0.0,
        "ci": [0.0, pytest.approx(0.79346, abs=1e-4)],
        "n": 1,
    }
    assert metrics["json_error_rate"]["value"] == 0.0
    assert metrics["judge_score"]["value"] == 0.8
    # every run answered with 10 + 5 tokens per model call; multiply made two calls, broken none.
    assert metrics["tokens_per_case"]["value"] == 15.0
    assert metrics["cost_per_query"]["value"] == 0.0
    assert metrics["latency_p95_ms"]["value"] >= metrics["latency_p50_ms"]["value"] > 0
    assert "bleu" not in metrics and "f1" not in metrics  # not measured, so not reported
    assert report["categories"]["math"]["passed"] == 1 and report["categories"]["math"]["cases"] == 2
    assert report["scorers"]["tool_used"] == {
        "n": 1, "mean": 1.0, "mean_ci": None, "pass_rate": 1.0, "pass_rate_ci": [pytest.approx(0.20654, abs=1e-4), 1.0],
    }  # fmt: skip
    assert report["run"]["profile"] == "t" and report["passed"] is False


def test_every_result_names_a_real_stored_run(evaluated: Evaluated) -> None:
    report = evaluated.report
    files = sorted(p.name for p in evaluated.results.glob("*.run.json"))
    assert files == sorted(f"{i}.run.json" for i in PASSING | FAILING)
    by_case = attempts(report)
    run_ids = [a["run_id"] for a in by_case.values()]
    judge_id = by_case["judged"]["scores"][0]["details"]["judge_run_id"]
    records, total = stored_runs(evaluated.cli, [*run_ids, judge_id])
    assert total == 9  # eight cases and one judge run
    for case in report["cases"]:
        attempt = case["attempts"][0]
        record = records[attempt["run_id"]]
        assert record.input == case["query"] and record.output == attempt["output"]
        assert record.status.value == attempt["status"] and record.trace_id == attempt["trace_id"]
        assert record.correlation_id == f"eval-{report['eval_id']}"
        on_disk = json.loads((evaluated.results / f"{case['case_id']}.run.json").read_text(encoding="utf-8"))
        assert on_disk["attempts"][0]["run_id"] == attempt["run_id"]
    assert records[judge_id].profile == "judge" and "grading an AI agent" in records[judge_id].input


def test_scores_explain_themselves(evaluated: Evaluated) -> None:
    by_case = attempts(evaluated.report)
    multiply = by_case["multiply"]
    assert multiply["tools"] == ["math.calculate:v1"] and multiply["output"] == "12 times 7 is 84."
    assert [s["scorer"] for s in multiply["scores"]] == ["numeric", "tool_used", "tool_sequence", "max_steps"]
    assert all(s["passed"] for s in multiply["scores"])
    assert by_case["wrong-sum"]["scores"][0]["explanation"] == "5 (last number) is not 4 within tolerance"
    assert "country" in by_case["city-json"]["scores"][0]["explanation"]
    assert (
        by_case["broken"]["status"] == "failed"
        and by_case["broken"]["error"]["code"] == "provider_unavailable"
    )
    judge = by_case["judged"]["scores"][0]
    assert judge["value"] == 0.8 and judge["explanation"] == "Accurate and concise." and judge["passed"]
    assert by_case["colours"]["scores"][1]["scorer"] == "tokens"  # from constraints.max_tokens
    markdown = (evaluated.results / "report.md").read_text(encoding="utf-8")
    assert (
        "**FAILED** · 5/8 cases passed" in markdown
        and "| Accuracy | 62.5% | 30.6% to 86.3% | 8 |" in markdown
    )
    assert "| wrong-sum | math |" in markdown
    assert (
        "eval cases 8/8 ━" in evaluated.done.stderr
        and "8/8 runs · pass rate 62.5% (5/8)" in evaluated.done.stderr
    )


def test_replay_rescores_recorded_runs_with_the_provider_switched_off(
    evaluated: Evaluated, tmp_path: Path
) -> None:
    cli, before = evaluated.cli, evaluated.report
    run_ids = [a["run_id"] for a in attempts(before).values()]
    _, runs_before = stored_runs(cli, [])
    configure(cli, agent_script=None)  # any model call would now fail
    dataset = evaluated.copy_dataset(tmp_path / "changed")
    cases = dataset / "test-cases/cases.yaml"
    cases.write_text(
        cases.read_text(encoding="utf-8").replace("content: 4}", "content: 5}"), encoding="utf-8"
    )
    try:
        done = cli(
            "eval", "run", str(dataset), "--replay", str(evaluated.results), "--report", str(tmp_path / "r")
        )
    finally:
        configure(cli)
    after = json.loads((tmp_path / "r/report.json").read_text(encoding="utf-8"))
    assert done.returncode == 1, done.stderr
    assert after["run"]["replay_of"] == before["eval_id"]
    assert [a["run_id"] for a in attempts(after).values()] == run_ids
    assert attempts(after)["wrong-sum"]["passed"] is True  # re-scored with the changed expectation
    assert after["summary"]["passed"] == 6
    judged = attempts(after)["judged"]["scores"][0]
    assert (
        judged["value"] == 0.8
        and judged["details"]["judge_run_id"]
        == (attempts(before)["judged"]["scores"][0]["details"]["judge_run_id"])
    )
    _, runs_after = stored_runs(cli, [])
    assert runs_after == runs_before  # no run was started: no model was called
    assert sorted(p.name for p in (dataset / "results").glob("*.run.json")) == sorted(
        p.name for p in evaluated.results.glob("*.run.json")
    )


@pytest.mark.parametrize(
    ("gates", "code", "message"),
    [
        (["--fail-under", "accuracy=60%"], 0, "gate accuracy=60%: pass (0.625 ≥ 0.6)"),
        (["--fail-under", "accuracy=0.7"], 1, "gate accuracy=0.7: FAIL (0.625 < 0.7)"),
        (["--fail-over", "tokens_per_case=10"], 1, "gate tokens_per_case=10: FAIL"),
        (["--fail-under", "scorer.llm_judge=0.8", "--fail-under", "category.math.accuracy=0.5"], 0, "pass"),
        (["--fail-under", "category.math.accuracy=0.51"], 1, "FAIL (0.5 < 0.51)"),
    ],
)
def test_gates_decide_the_exit_code(
    evaluated: Evaluated, tmp_path: Path, gates: list[str], code: int, message: str
) -> None:
    report = tmp_path / "report"
    done = evaluated.cli("eval", "run", str(evaluated.dataset), "--replay", str(evaluated.results), "--results",
                         str(tmp_path / "res"), "--report", str(report), *gates)  # fmt: skip
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert [g["passed"] for g in json.loads((report / "report.json").read_text())["gates"]] == [code == 0] * (
        len(gates) // 2
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fail-under", "bleu=20"], "no case uses bleu, so bleu is not measured"),
        (["--fail-under", "niceness=1"], "unknown metric 'niceness'"),
        (["--fail-under", "accuracy"], "--fail-under takes METRIC=VALUE"),
        (["--fail-under", "accuracy=high"], "'high' is not a number"),
        (["--fail-under", "scorer.bleu=0.2"], "no case uses the scorer 'bleu'"),
        (["--category", "nope"], "unknown category 'nope'"),
        (["--replay", "/no/such/dir"], "no report.json or *.run.json results"),
        (["--profile", "ghost"], "unknown profile 'ghost'"),
        (["--judge-profile", "ghost"], "unknown profile 'ghost'"),
        (["--mode", "telepathy"], "unknown mode 'telepathy'"),
        (["--report", "{dataset}/colours.jsonl"], "cannot create"),
        (["--run-url", "javascript:alert(1)//{run_id}"], "--run-url must be an http(s) URL"),
        (["--replay", "{dataset}/results", "--repeat", "2"], "--replay re-scores recorded runs"),
    ],
)
def test_usage_errors_exit_2_with_one_red_line(evaluated: Evaluated, args: list[str], message: str) -> None:
    args = [a.replace("{dataset}", str(evaluated.dataset)) for a in args]
    done = evaluated.cli("eval", "run", str(evaluated.dataset), *args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


def test_a_missing_dataset_is_a_usage_error(evaluated: Evaluated, tmp_path: Path) -> None:
    done = evaluated.cli("eval", "run", str(tmp_path / "nothing-here"))
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = evaluated.cli("eval", "compare", str(evaluated.results), str(tmp_path))
    assert done.returncode == 2 and "no eval report at" in done.stderr


def test_malformed_cases_are_reported_and_the_others_still_run(cli: Cli, tmp_path: Path) -> None:
    configure(cli)
    dataset = tmp_path / "cases.jsonl"
    good = {"id": "ok", "input": {"query": "What is the capital of France?", "mode": "chat"},
            "expected": {"type": "contains", "content": "Paris"}}  # fmt: skip
    bad = {
        "id": "bad",
        "input": {"query": "q"},
        "expected": {"type": "numeric", "content": 4, "tolerance": "wide"},
    }
    dataset.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    done = cli("eval", "run", str(dataset))
    assert done.returncode == 2
    assert f"error: {dataset}:2: expected.tolerance: numeric: Input should be a valid number" in done.stderr
    report = json.loads((tmp_path / "results/report.json").read_text(encoding="utf-8"))
    assert [c["case_id"] for c in report["cases"]] == ["ok"] and report["cases"][0]["passed"]
    assert report["dataset"]["invalid"][0]["line"] == 2 and report["dataset"]["invalid"][0]["field"] == (
        "expected.tolerance"
    )
    assert (tmp_path / "results/ok.run.json").is_file()


def test_repeat_runs_each_case_several_times(cli: Cli, tmp_path: Path) -> None:
    configure(cli)
    dataset = write_dataset(tmp_path / "ds")
    done = cli("eval", "run", str(dataset), "--repeat", "2", "--case", "capital", "--case", "wrong-sum",
               "--json", "--fail-under", "accuracy=0.5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [len(c["attempts"]) for c in report["cases"]] == [2, 2]
    assert [a["attempt"] for a in report["cases"][0]["attempts"]] == [1, 2]
    assert len({a["run_id"] for c in report["cases"] for a in c["attempts"]}) == 4
    assert report["summary"]["attempts"] == 4 and report["metrics"]["accuracy"]["n"] == 4


def test_compare_names_flips_and_fails_on_a_regression(evaluated: Evaluated, tmp_path: Path) -> None:
    worse = evaluated.copy_dataset(tmp_path / "worse")
    expected = worse / "expected/capital.expected.json"
    expected.write_text(json.dumps({"type": "contains", "content": "Lyon"}), encoding="utf-8")
    cli = evaluated.cli
    cli("eval", "run", str(worse), "--replay", str(evaluated.results), "--report", str(tmp_path / "b"))
    done = cli("eval", "compare", str(evaluated.results), str(tmp_path / "b"), "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["flipped"] == {"pass_to_fail": ["capital"], "fail_to_pass": []}
    accuracy = next(r for r in result["metrics"] if r["metric"] == "accuracy")
    assert accuracy["a"] == 0.625 and accuracy["b"] == 0.5 and accuracy["delta"] == -0.125
    assert accuracy["test"] == "mcnemar" and accuracy["p_value"] == 1.0 and accuracy["regression"]
    assert "accuracy" in result["regressions"] and "scorer.contains" in result["regressions"]
    tolerant = cli("eval", "compare", str(evaluated.results), str(tmp_path / "b"), "--threshold", "0.3",
                   "--ignore", "scorer.contains")  # fmt: skip
    assert tolerant.returncode == 0, tolerant.stdout + tolerant.stderr
    assert "now fails: capital" in tolerant.stdout
    same = cli("eval", "compare", str(evaluated.results), str(evaluated.results / "report.json"))
    assert same.returncode == 0 and "regression" not in same.stdout


def test_an_interrupted_eval_keeps_what_finished(cli: Cli, tmp_path: Path) -> None:
    script = {"rules": [{"match": "slow", "text": "late", "delay": 120}], "responses": [{"text": "fast"}]}
    cli.script(script)
    dataset = tmp_path / "cases.yaml"
    cases = [{"test_case": {"id": name, "input": {"query": f"{name} question", "mode": "chat"},
                            "expected": {"type": "contains", "content": "fast"}}} for name in ("a", "b", "slow")]  # fmt: skip
    dataset.write_text(json.dumps(cases), encoding="utf-8")
    process = cli.popen("eval", "run", str(dataset), "--parallel", "3")
    deadline = time.monotonic() + 60
    while (
        not all((tmp_path / f"results/{n}.run.json").is_file() for n in "ab") and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    report = json.loads((tmp_path / "results/report.json").read_text(encoding="utf-8"))
    assert report["run"]["interrupted"] is True
    status = {c["case_id"]: c["attempts"][0]["status"] for c in report["cases"]}
    assert status == {"a": "completed", "b": "completed", "slow": "cancelled"}


def test_scorers_are_listed(cli: Cli) -> None:
    done = cli("eval", "scorers", "--json")
    assert done.returncode == 0
    listed = {row["name"]: row for row in json.loads(done.stdout)}
    assert listed["numeric"]["parameters"] == ["content", "pick", "relative_tolerance", "tolerance"]
    assert listed["bleu"]["default_threshold"] == 0.3
    assert "eval" in cli("--help").stdout
