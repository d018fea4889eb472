"""Scorers over the answer's text: exact, contains, keywords, regex."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agentstage.evals.scorers.base import Sample, Score, Scorer, register, short


def _normalize(text: str, ignore_case: bool) -> str:
    collapsed = " ".join(text.split())
    return collapsed.casefold() if ignore_case else collapsed


def _alternatives(content: str | list[str]) -> list[str]:
    return [content] if isinstance(content, str) else list(content)


@register
class Exact(Scorer):
    name = "exact"
    summary = "The answer equals `content` (or one of a list), whitespace collapsed; `ignore_case` optional."
    content: str | list[str] = Field(min_length=1)
    ignore_case: bool = False

    @field_validator("content", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    async def score(self, sample: Sample) -> Score:
        answer = _normalize(sample.output, self.ignore_case)
        for option in _alternatives(self.content):
            if answer == _normalize(option, self.ignore_case):
                return self.verdict(1, f"the answer equals {short(option)}")
        wanted = " or ".join(short(o) for o in _alternatives(self.content))
        return self.verdict(0, f"the answer {short(sample.output)} is not {wanted}")


@register
class Contains(Scorer):
    name = "contains"
    summary = (
        "The answer contains `content` (or any of a list); case-insensitive unless `ignore_case: false`."
    )
    content: str | list[str] = Field(min_length=1)
    ignore_case: bool = True

    @field_validator("content", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    async def score(self, sample: Sample) -> Score:
        answer = _normalize(sample.output, self.ignore_case)
        for option in _alternatives(self.content):
            if _normalize(option, self.ignore_case) in answer:
                return self.verdict(1, f"the answer contains {short(option)}")
        wanted = " or ".join(short(o) for o in _alternatives(self.content))
        return self.verdict(0, f"the answer {short(sample.output)} does not contain {wanted}")


@register
class Keywords(Scorer):
    name = "keywords"
    summary = (
        "The share of `keywords` found in the answer (`match: all`, the default) or whether any is "
        "(`match: any`); `whole_word` to match words only."
    )
    keywords: list[str] = Field(min_length=1)
    match: Literal["all", "any"] = "all"
    ignore_case: bool = True
    whole_word: bool = False

    @field_validator("keywords")
    @classmethod
    def _not_blank(cls, keywords: list[str]) -> list[str]:
        if any(not k.strip() for k in keywords):
            raise ValueError("keywords may not be blank")
        return keywords

    def _found(self, keyword: str, answer: str) -> bool:
        flags = re.I if self.ignore_case else 0
        pattern = re.escape(keyword.strip())
        if self.whole_word:
            pattern = rf"(?<!\w){pattern}(?!\w)"
        return re.search(pattern, answer, flags) is not None

    async def score(self, sample: Sample) -> Score:
        found = [k for k in self.keywords if self._found(k, sample.output)]
        missing = [k for k in self.keywords if k not in found]
        if self.match == "any":
            value = 1.0 if found else 0.0
            text = f"found {found!r}" if found else f"none of {self.keywords!r} in the answer"
        else:
            value = len(found) / len(self.keywords)
            text = f"{len(found)} of {len(self.keywords)} keywords found" + (
                f"; missing {missing!r}" if missing else ""
            )
        return self.verdict(value, text, found=found, missing=missing)


@register
class Regex(Scorer):
    name = "regex"
    summary = "The answer matches `pattern` (Python syntax, searched anywhere unless `full_match`)."
    also_reads = frozenset({"content"})
    pattern: str = Field(min_length=1)
    ignore_case: bool = False
    full_match: bool = False

    @model_validator(mode="before")
    @classmethod
    def _content_is_the_pattern(cls, data: object) -> object:
        if isinstance(data, dict) and "pattern" not in data and "content" in data:
            data = dict(data)
            data["pattern"] = data.pop("content")
        return data

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        return pattern

    async def score(self, sample: Sample) -> Score:
        flags = re.I | re.S if self.ignore_case else re.S
        text = sample.output.strip()
        found = (
            re.fullmatch(self.pattern, text, flags)
            if self.full_match
            else re.search(self.pattern, text, flags)
        )
        if found:
            return self.verdict(1, f"matched {short(found.group(0))}")
        return self.verdict(0, f"the answer {short(sample.output)} does not match {self.pattern!r}")
