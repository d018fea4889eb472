"""Scorers for structured answers: json_valid, json_schema (schema compliance) and numeric tolerance."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from jsonschema import FormatChecker
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from pydantic import Field, field_validator

from agentstage.evals.scorers.base import Sample, Score, Scorer, parse_json_output, register, short


@register
class JsonValid(Scorer):
    name = "json_valid"
    summary = "The answer is valid JSON (a Markdown code fence around it is allowed unless `strict`)."
    strict: bool = False

    async def score(self, sample: Sample) -> Score:
        ok, _, error = parse_json_output(sample.output, allow_fence=not self.strict)
        if ok:
            return self.verdict(1, "the answer is valid JSON", label="valid", json_valid=True)
        return self.verdict(0, f"the answer is not valid JSON: {error}", label="invalid", json_valid=False)


@register
class JsonSchema(Scorer):
    name = "json_schema"
    summary = "The answer is JSON that validates against `schema` (JSON Schema; draft from `$schema`, else 2020-12)."
    schema_: dict[str, Any] = Field(alias="schema")

    @field_validator("schema_")
    @classmethod
    def _is_a_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as error:
            where = "/".join(str(p) for p in error.path) or "(root)"
            raise ValueError(f"not a valid JSON Schema at {where}: {error.message}") from None
        return schema

    async def score(self, sample: Sample) -> Score:
        ok, value, error = parse_json_output(sample.output)
        if not ok:
            return self.verdict(
                0, f"the answer is not valid JSON: {error}", label="invalid_json", json_valid=False, errors=[]
            )
        validator = validator_for(self.schema_)(self.schema_, format_checker=FormatChecker())
        problems = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        if not problems:
            return self.verdict(
                1, "the answer matches the schema", label="compliant", json_valid=True, errors=[]
            )
        listed = [f"{'/'.join(str(p) for p in e.path) or '(root)'}: {e.message}" for e in problems[:5]]
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        return self.verdict(
            0,
            f"{len(problems)} schema violation(s): " + "; ".join(listed) + more,
            label="non_compliant",
            json_valid=True,
            errors=listed,
        )


_NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def numbers_in(text: str) -> list[float]:
    """Every number written in a text, in order ("1,234.5" is one number; "12-7" is 12 and 7)."""
    return [float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(text)]


@register
class Numeric(Scorer):
    name = "numeric"
    summary = (
        "A number in the answer (`pick: last` by default, or `first`, `any`) equals `content` within "
        "`tolerance` (absolute) or `relative_tolerance`."
    )
    content: float
    tolerance: float = Field(default=1e-9, ge=0)
    relative_tolerance: float = Field(default=0.0, ge=0)
    pick: Literal["last", "first", "any"] = "last"

    @field_validator("content", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        if isinstance(value, str):
            found = numbers_in(value)
            if len(found) != 1:
                raise ValueError(f"must be one number, got {value!r}")
            return found[0]
        return value

    def _close(self, number: float) -> bool:
        return math.isclose(number, self.content, rel_tol=self.relative_tolerance, abs_tol=self.tolerance)

    async def score(self, sample: Sample) -> Score:
        found = numbers_in(sample.output)
        expected = f"{self.content:g}"
        if not found:
            return self.verdict(
                0, f"no number in the answer {short(sample.output)}; expected {expected}", found=[]
            )
        candidates = {"last": found[-1:], "first": found[:1], "any": found}[self.pick]
        hit = next((n for n in candidates if self._close(n)), None)
        if hit is not None:
            return self.verdict(1, f"{hit:g} is within tolerance of {expected}", found=found)
        shown = ", ".join(f"{n:g}" for n in candidates)
        return self.verdict(
            0, f"{shown} ({self.pick} number) is not {expected} within tolerance", found=found
        )
