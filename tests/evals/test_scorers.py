"""Scorers against values known independently: sacrebleu's own reference numbers, F1 and ROUGE-L by hand."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agentstage.evals.dataset import EvalCase
from agentstage.evals.metrics import BY_NAME as METRICS
from agentstage.evals.metrics import measure
from agentstage.evals.results import AttemptResult
from agentstage.evals.scorers import SCORERS, Sample, Score
from agentstage.evals.scorers.judge import read_verdict
from agentstage.evals.scorers.overlap import lcs_length, rouge_l
from agentstage.evals.scorers.structured import numbers_in

pytestmark = pytest.mark.anyio
CASE = EvalCase(id="c1", input={"query": "What is asked?"})


async def score(name: str, output: str, **params: Any) -> Score:
    sample = Sample(case=CASE, output=output, status="completed", latency_ms=1200.0,
                    usage={"input_tokens": 300, "output_tokens": 40, "total_tokens": 340}, cost=0.002)  # fmt: skip
    return await SCORERS[name].model_validate(params).score(sample)


# sacrebleu's test_sentence_bleu.py: this pair scores 8.493 with the defaults (13a, exp smoothing).
BLEU_REF = "producţia de zahăr brut se exprimă în zahăr alb;"
BLEU_SYS = "Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;"


async def test_bleu_matches_sacrebleus_reference_number() -> None:
    result = await score("bleu", BLEU_SYS, content=BLEU_REF)
    assert result.details["bleu"] == pytest.approx(8.493, abs=1e-3)
    assert result.value == pytest.approx(0.08493, abs=1e-5)
    assert not result.passed  # below the default 0.3
    assert (await score("bleu", BLEU_SYS, content=BLEU_REF, tokenize="char", lowercase=True)).details[
        "bleu"
    ] == pytest.approx(42.0267, abs=1e-3)
    assert (await score("bleu", "okay thanks", content="this is a cat")).value == 0.0


async def test_corpus_bleu_matches_sacrebleus_readme_example() -> None:
    """sacrebleu's test_bleu.py: these three hypotheses against two reference streams give 48.530827."""
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    refs = [
        ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
        ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
    ]
    attempts = []
    for index, hyp in enumerate(hyps):
        bleu = await score("bleu", hyp, content=[refs[0][index], refs[1][index]])
        attempts.append(AttemptResult(status="completed", run_id=f"r{index}", output=hyp, scores=[bleu]))
    assert measure(METRICS["corpus_bleu"], attempts)["value"] == pytest.approx(48.530827, abs=1e-6)
    assert measure(METRICS["bleu"], attempts)["n"] == 3


async def test_f1_over_labels_by_hand() -> None:
    # predicted {a, b, c, d}, reference {b, c, e}: 2 common → P = 2/4, R = 2/3, F1 = 2PR/(P+R) = 4/7.
    result = await score("f1", "A, B; c\n- d", labels=["b", "C", "e"])
    assert result.details["precision"] == pytest.approx(0.5)
    assert result.details["recall"] == pytest.approx(2 / 3, abs=1e-6)
    assert result.value == pytest.approx(4 / 7, abs=1e-6)
    assert result.passed  # 0.571 ≥ 0.5
    precision = await score("precision", "A, B; c\n- d", labels=["b", "C", "e"])
    recall = await score("recall", "A, B; c\n- d", labels=["b", "C", "e"], threshold=0.7)
    assert precision.value == pytest.approx(0.5) and recall.value == pytest.approx(2 / 3, abs=1e-6)
    assert not recall.passed


async def test_f1_over_tokens_by_hand() -> None:
    # answer tokens: the cat sat on the mat (6); reference: the cat is on the mat (6);
    # common (as bags): the (twice), cat, on, mat = 5 → P = R = F1 = 5/6.
    result = await score("f1", "The cat sat on the mat.", content="the cat is on the mat")
    assert result.value == pytest.approx(5 / 6, abs=1e-6)
    assert result.details["over"] == "tokens"
    assert (await score("f1", "", content="")).value == 1.0
    assert (await score("f1", "", content="something")).value == 0.0


async def test_rouge_l_by_hand() -> None:
    # LCS("police killed the gunman", "police kill the gunman") = police the gunman = 3 → P = R = F = 3/4.
    assert lcs_length("a b c d".split(), "a c d".split()) == 3
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx((0.75, 0.75, 0.75))
    result = await score(
        "rouge_l", "police killed the gunman", content=["nothing alike", "police kill the gunman"]
    )
    assert result.value == pytest.approx(0.75) and result.passed
    assert (await score("rouge_l", "", content="x")).value == 0.0


async def test_exact_contains_keywords_regex() -> None:
    assert (await score("exact", "  Paris \n", content="Paris")).passed
    assert not (await score("exact", "paris", content="Paris")).passed
    assert (await score("exact", "paris", content=["Lyon", "Paris"], ignore_case=True)).passed
    assert (await score("exact", "84", content=84)).passed
    assert (await score("contains", "The capital is PARIS.", content="paris")).passed
    assert not (await score("contains", "The capital is PARIS.", content="paris", ignore_case=False)).passed
    kw = await score("keywords", "red and blue", keywords=["red", "blue", "yellow"])
    assert (
        kw.value == pytest.approx(2 / 3, abs=1e-6) and not kw.passed and kw.details["missing"] == ["yellow"]
    )
    assert (await score("keywords", "red and blue", keywords=["red", "blue", "yellow"], threshold=0.6)).passed
    assert (await score("keywords", "only yellow", keywords=["red", "yellow"], match="any")).passed
    assert not (await score("keywords", "redish", keywords=["red"], whole_word=True)).passed
    assert (await score("regex", "Order #4521 shipped", pattern=r"#\d{4}\b")).passed
    assert (await score("regex", "ok", content="^OK$", ignore_case=True)).passed
    assert not (await score("regex", "ok then", pattern="ok", full_match=True)).passed


async def test_json_valid_and_json_schema() -> None:
    assert (await score("json_valid", '```json\n{"a": 1}\n```')).passed
    assert not (await score("json_valid", '```json\n{"a": 1}\n```', strict=True)).passed
    invalid = await score("json_valid", "{'a': 1}")
    assert invalid.label == "invalid" and invalid.details["json_valid"] is False
    schema = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}
    ok = await score("json_schema", '{"city": "Tokyo"}', schema=schema)
    assert ok.passed and ok.label == "compliant"
    wrong = await score("json_schema", '{"city": 3}', schema=schema)
    assert not wrong.passed and wrong.details["json_valid"] is True and "city" in wrong.explanation
    broken = await score("json_schema", "not json", schema=schema)
    assert broken.label == "invalid_json" and broken.details["json_valid"] is False


async def test_numeric_tolerance_and_number_extraction() -> None:
    assert numbers_in("Sales were 1,234.5 then -3 and 12-7, 2e3.") == [1234.5, -3.0, 12.0, 7.0, 2000.0]
    assert (await score("numeric", "12 * 7 = 84", content=84)).passed
    assert not (await score("numeric", "84 is 12 times 7", content=84)).passed  # the last number is 7
    assert (await score("numeric", "84 is 12 times 7", content=84, pick="first")).passed
    assert (await score("numeric", "about 35.99", content=36, tolerance=0.05)).passed
    assert not (await score("numeric", "about 35.9", content=36, tolerance=0.05)).passed
    assert (await score("numeric", "102000", content="102,039.6", relative_tolerance=0.01)).passed
    assert not (await score("numeric", "no digits", content=1)).passed


async def test_latency_tokens_and_cost_constraints() -> None:
    assert (await score("latency", "", max_latency_ms=1500)).passed
    assert not (await score("latency", "", max_latency_ms=1000)).passed
    assert (await score("tokens", "", max_tokens=340)).passed
    assert not (await score("tokens", "", max_tokens=339)).passed
    assert (await score("tokens", "", max_tokens=40, count="output")).passed
    assert not (await score("cost", "", max_cost=0.001)).passed


def test_intervals_stay_within_the_metrics_range() -> None:
    """A mean of mostly zeros has a t interval below 0; tokens and rates cannot be negative."""
    runs = [
        AttemptResult(status="completed", run_id=f"r{i}", usage={"total_tokens": t})
        for i, t in enumerate([0, 0, 0, 90])
    ]
    tokens = measure(METRICS["tokens_per_case"], runs)
    assert tokens["value"] == 22.5 and tokens["ci"][0] == 0.0 and tokens["ci"][1] > 22.5


def test_judge_verdicts_are_read_strictly() -> None:
    assert read_verdict('Sure: {"reasoning": "Correct and brief.", "score": 0.9}') == (
        0.9,
        "Correct and brief.",
    )
    assert read_verdict("score: 1")[0] == 1.0
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        read_verdict('{"score": 7, "reasoning": "x"}')
    with pytest.raises(ValueError, match="no score"):
        read_verdict("I think it is fine.")


def test_bad_parameters_are_refused_when_the_scorer_is_built() -> None:
    for name, params in [
        ("regex", {"pattern": "([a-z"}),
        ("json_schema", {"schema": {"type": "no-such-type"}}),
        ("bleu", {"content": "x", "tokenize": "flores200"}),
        ("keywords", {"keywords": []}),
        ("numeric", {"content": "one or two"}),
        ("f1", {}),
        ("exact", {"content": "x", "typo": 1}),
        ("contains", {"content": "x", "threshold": 1.5}),
    ]:
        with pytest.raises(ValidationError):
            SCORERS[name].model_validate(params)


def test_every_scorer_is_documented() -> None:
    assert {"exact", "contains", "keywords", "regex", "json_valid", "json_schema", "precision", "recall", "f1",
            "bleu", "rouge_l", "numeric", "latency", "tokens", "cost", "tool_used", "tool_sequence", "max_steps",
            "llm_judge"} <= set(SCORERS)  # fmt: skip
    assert all(cls.summary for cls in SCORERS.values())
