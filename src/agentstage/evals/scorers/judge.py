"""``llm_judge``: a rubric graded by a judge model, its reasoning kept with the score.

The judge is itself a normal run (mode chat, no tools) of the judge profile, so its prompt,
answer, cost and trace are recorded like any other; its run id is kept in the score's details.
When an eval is re-scored with ``--replay``, the recorded verdict is read back instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field

from agentstage.evals.scorers.base import Sample, Score, Scorer, register

MAX_ANSWER_CHARS = 8000
_SCORE_FIELD = re.compile(r"\"?score\"?\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.I)


def judge_prompt(rubric: str, question: str, answer: str, reference: str | None) -> str:
    if len(answer) > MAX_ANSWER_CHARS:
        answer = answer[:MAX_ANSWER_CHARS] + " […cut]"
    parts = [
        "You are grading an AI agent's answer. Be strict and follow the rubric.",
        f"Rubric: {rubric}",
        f"Question: {question}",
    ]
    if reference:
        parts.append(f"Reference answer: {reference}")
    parts += [
        f"Agent's answer: {answer}",
        'Reply with one JSON object and nothing else: {"reasoning": "<one or two sentences>", '
        '"score": <a number from 0 (fails the rubric) to 1 (fully meets it)>}',
    ]
    return "\n\n".join(parts)


def read_verdict(output: str) -> tuple[float, str]:
    """The score (0..1) and reasoning in a judge's answer; ValueError when there is none."""
    start, end = output.find("{"), output.rfind("}")
    if start != -1 and end > start:
        try:
            data: Any = json.loads(output[start : end + 1])
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("score"), int | float):
            return _in_range(float(data["score"])), str(data.get("reasoning", "")).strip()
    found = _SCORE_FIELD.search(output)
    if found:
        return _in_range(float(found.group(1))), output.strip()
    raise ValueError(f"no score in the judge's answer {output[:200]!r}")


def _in_range(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"the judge's score {value:g} is outside 0..1")
    return value


@register
class LlmJudge(Scorer):
    name = "llm_judge"
    summary = (
        "A judge model grades the answer against `rubric` (0..1), with the question and `content` as a "
        "reference; `profile` picks the judge (default: --judge-profile, else the default profile)."
    )
    default_threshold = 0.5
    rubric: str = Field(min_length=1)
    content: str | None = None
    profile: str | None = None

    async def score(self, sample: Sample) -> Score:
        if sample.judge is None:
            return self.verdict(0, "no judge is available to grade this answer", label="error")
        prompt = judge_prompt(self.rubric, sample.query, sample.output, self.content)
        verdict = await sample.judge(prompt, self.profile)
        details: dict[str, Any] = {"judge_run_id": verdict.run_id, "judge_output": verdict.output}
        if verdict.status != "completed":
            reason = verdict.error or verdict.status
            return self.verdict(0, f"the judge run did not complete: {reason}", label="error", **details)
        try:
            value, reasoning = read_verdict(verdict.output)
        except ValueError as error:
            return self.verdict(0, str(error), label="error", **details)
        return self.verdict(value, reasoning or f"judged {value:g}", reasoning=reasoning, **details)
