"""Overlap scorers: precision / recall / F1 (over labels or tokens), BLEU (sacrebleu) and ROUGE-L."""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from agentstage.evals.scorers.base import Sample, Score, Scorer, register

if TYPE_CHECKING:
    from sacrebleu.metrics.bleu import BLEU

_WORD = re.compile(r"\w+", re.UNICODE)
_LABEL_SPLIT = re.compile(r"[,;\n]+")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens, punctuation dropped: the unit of token-level F1 and ROUGE-L."""
    return _WORD.findall(text.casefold())


def labels(text: str) -> list[str]:
    """Labels in an answer written as a list: split on commas, semicolons and new lines."""
    found = []
    for part in _LABEL_SPLIT.split(text):
        label = part.strip().strip("-*•\"'`.[]()").strip().casefold()
        if label:
            found.append(label)
    return found


def overlap(predicted: list[str], reference: list[str]) -> tuple[float, float, float]:
    """(precision, recall, F1) of two bags of items; two empty bags agree perfectly."""
    if not predicted and not reference:
        return 1.0, 1.0, 1.0
    common = sum((Counter(predicted) & Counter(reference)).values())
    precision = common / len(predicted) if predicted else 0.0
    recall = common / len(reference) if reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class _Overlap(Scorer):
    """Shared by precision, recall and F1: each reports all three and is judged on its own."""

    metric: ClassVar[str] = ""
    default_threshold = 0.5
    content: str | None = None
    labels_: list[str] | None = Field(default=None, alias="labels")
    over: Literal["labels", "tokens"] | None = None

    @model_validator(mode="after")
    def _has_a_reference(self) -> _Overlap:
        if self.content is None and self.labels_ is None:
            raise ValueError("give the reference as `content` (text) or `labels` (a list)")
        return self

    def _items(self, output: str) -> tuple[list[str], list[str], str]:
        over = self.over or ("labels" if self.labels_ is not None else "tokens")
        if over == "labels":
            reference = (
                [x.strip().casefold() for x in self.labels_]
                if self.labels_ is not None
                else labels(self.content or "")
            )
            return sorted(set(labels(output))), sorted(set(reference)), over
        reference = tokens(self.content if self.content is not None else " ".join(self.labels_ or []))
        return tokens(output), reference, over

    async def score(self, sample: Sample) -> Score:
        predicted, reference, over = self._items(sample.output)
        precision, recall, f1 = overlap(predicted, reference)
        values = {"precision": precision, "recall": recall, "f1": f1}
        text = f"{self.metric} {values[self.metric]:.3f} over {over} (P {precision:.3f}, R {recall:.3f}, F1 {f1:.3f})"
        return self.verdict(
            values[self.metric],
            text,
            over=over,
            precision=round(precision, 6),
            recall=round(recall, 6),
            f1=round(f1, 6),
        )


@register
class Precision(_Overlap):
    name = "precision"
    metric = "precision"
    summary = "Share of the answer's labels (or tokens) that are in the reference `labels` / `content`."


@register
class Recall(_Overlap):
    name = "recall"
    metric = "recall"
    summary = "Share of the reference `labels` / `content` found in the answer."


@register
class F1(_Overlap):
    name = "f1"
    metric = "f1"
    summary = "Harmonic mean of precision and recall over labels (`labels`) or tokens (`content`)."


def _references(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


@register
class Bleu(Scorer):
    name = "bleu"
    summary = (
        "Sentence BLEU (sacrebleu, 13a tokenizer, exponential smoothing) against `content` "
        "(one reference or a list); the value is BLEU / 100."
    )
    default_threshold = 0.3
    content: list[str] = Field(min_length=1)
    # Tokenizers that need no download and no extra package.
    tokenize: Literal["13a", "intl", "char", "zh", "none"] = "13a"
    lowercase: bool = False

    @field_validator("content", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _references(value)

    async def score(self, sample: Sample) -> Score:
        result = _sentence_bleu(self.tokenize, self.lowercase).sentence_score(
            sample.output, list(self.content)
        )
        return self.verdict(
            result.score / 100,
            f"BLEU {result.score:.2f}",
            bleu=round(result.score, 6),
            references=list(self.content),
            tokenize=self.tokenize,
            lowercase=self.lowercase,
        )


@functools.lru_cache(maxsize=16)
def _sentence_bleu(tokenize: str, lowercase: bool) -> BLEU:
    """One sacrebleu metric per setting: building it costs more than scoring a sentence."""
    from sacrebleu.metrics.bleu import BLEU

    return BLEU(tokenize=tokenize, lowercase=lowercase, effective_order=True)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, in O(len(a) * len(b)) time and O(len(b)) memory."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, reference: str) -> tuple[float, float, float]:
    """ROUGE-L (precision, recall, F1) over word tokens, as Lin (2004) defines it with beta = 1."""
    hyp, ref = tokens(hypothesis), tokens(reference)
    lcs = lcs_length(hyp, ref)
    if not lcs:
        return 0.0, 0.0, 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return precision, recall, 2 * precision * recall / (precision + recall)


@register
class RougeL(Scorer):
    name = "rouge_l"
    summary = (
        "ROUGE-L F1 (longest common subsequence of words) against `content`; the best of several references."
    )
    default_threshold = 0.5
    content: list[str] = Field(min_length=1)

    @field_validator("content", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _references(value)

    async def score(self, sample: Sample) -> Score:
        best = max((rouge_l(sample.output, ref) for ref in self.content), key=lambda prf: prf[2])
        precision, recall, f1 = best
        return self.verdict(
            f1,
            f"ROUGE-L F1 {f1:.3f} (P {precision:.3f}, R {recall:.3f})",
            precision=round(precision, 6),
            recall=round(recall, 6),
            f1=round(f1, 6),
        )
