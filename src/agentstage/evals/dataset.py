"""Eval datasets: the case model, and loading cases from any of the accepted layouts.

Accepted, alone or together in one directory:

- ``inputs/NAME.json`` with ``expected/NAME.expected.json`` (the case id is NAME);
- YAML files (``test-cases/*.yaml`` or ``*.yaml`` beside them), each holding ``test_case: {...}``,
  a list of them, or several documents;
- JSONL files, one case per line (the object that sits under ``test_case:`` in YAML).

A malformed case becomes a :class:`Problem` naming its file, line and field; the other cases
still load. Scorers are built (and their parameters validated) here, before any run starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentstage.errors import InvalidInputError
from agentstage.evals.scorers import SCORERS, Scorer, load_plugins, scorer_names
from agentstage.evals.sources import Problem, RawCase, read_json, read_jsonl, read_yaml, unwrap
from agentstage.runtime.requests import RunOptions
from agentstage.types import Mode

#: Constraints that add a scorer of their own, and the scorer's parameter.
CONSTRAINT_SCORERS = {
    "max_latency_ms": "latency",
    "max_tokens": "tokens",
    "max_steps": "max_steps",
    "max_cost": "cost",
}


class CaseInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    mode: Mode | None = Field(default=None, description="Overrides --mode for this case.")
    options: RunOptions = Field(default_factory=RunOptions)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is blank")
        return query


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int | None = Field(default=None, ge=1)
    max_latency_ms: float | None = Field(default=None, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, ge=0)
    required_accuracy: float | None = Field(
        default=None, gt=0, le=1, description="The value each scorer must reach (default: the scorer's own)."
    )


class EvalCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=200)
    category: str = Field(default="general", min_length=1, max_length=100)
    description: str = ""
    input: CaseInput
    expected: dict[str, Any] = Field(default_factory=dict)
    constraints: Constraints = Field(default_factory=Constraints)
    scorers: list[str | dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", "category", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else value

    @field_validator("input", mode="before")
    @classmethod
    def _query_shorthand(cls, value: Any) -> Any:
        return {"query": value} if isinstance(value, str) else value

    def expected_text(self) -> str | None:
        """The reference answer as text, when the case has one (for token efficiency and reports)."""
        content = self.expected.get("content")
        if isinstance(content, list):
            content = content[0] if content else None
        if isinstance(content, str | int | float) and not isinstance(content, bool):
            return str(content)
        return None


@dataclass
class LoadedCase:
    """A valid case with its scorers built, and where it was defined."""

    case: EvalCase
    scorers: list[Scorer]
    file: str
    line: int

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Dataset:
    path: Path
    cases: list[LoadedCase] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def root(self) -> Path:
        """The directory results are written under by default."""
        return self.path if self.path.is_dir() else self.path.parent

    def categories(self) -> list[str]:
        return sorted({c.case.category for c in self.cases})

    def select(self, categories: list[str] | None = None, ids: list[str] | None = None) -> Dataset:
        """Only the named categories and case ids; naming one that does not exist is a usage error."""
        cases = self.cases
        if categories:
            unknown = sorted(set(categories) - set(self.categories()))
            if unknown:
                raise InvalidInputError(
                    f"unknown category {unknown[0]!r} (the dataset has: {', '.join(self.categories())})"
                )
            cases = [c for c in cases if c.case.category in categories]
        if ids:
            known = {c.id for c in self.cases}
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise InvalidInputError(f"unknown case id {unknown[0]!r} in {str(self.path)!r}")
            cases = [c for c in cases if c.id in ids]
        return Dataset(self.path, cases, self.problems)


class _CaseInvalid(Exception):
    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def load_dataset(path: Path) -> Dataset:
    """Every case under ``path`` (a directory or one file). Raises InvalidInputError only when the
    path itself is unusable; bad cases are returned as problems."""
    load_plugins()
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"dataset {str(path)!r} does not exist")
    raws, problems = _read(path)
    dataset = Dataset(path, problems=problems)
    first_seen: dict[str, str] = {}
    for raw in raws:
        try:
            loaded = build_case(raw)
        except _CaseInvalid as invalid:
            dataset.problems += invalid.problems
            continue
        if loaded.id in first_seen:
            message = f"duplicate case id {loaded.id!r} (first defined at {first_seen[loaded.id]})"
            dataset.problems.append(raw.problem(["id"], message))
            continue
        first_seen[loaded.id] = loaded.source
        dataset.cases.append(loaded)
    dataset.problems.sort(key=lambda p: (p.file, p.line))
    if not dataset.cases and not dataset.problems:
        raise InvalidInputError(
            f"no test cases found in {str(path)!r}: expected inputs/*.json with expected/*.expected.json, "
            "test-cases/*.yaml, or *.jsonl files"
        )
    return dataset


def _read(path: Path) -> tuple[list[RawCase], list[Problem]]:
    if path.is_dir():
        files = _case_files(path)
        raws, problems = _read_pairs(path)
    else:
        if path.suffix.lower() not in {".yaml", ".yml", ".jsonl", ".json"}:
            raise InvalidInputError(
                f"dataset file {str(path)!r} is not .yaml, .yml, .jsonl or .json; give one of those or a directory"
            )
        files, raws, problems = [path], [], []
    for file in files:
        found, wrong = _read_file(file)
        raws += found
        problems += wrong
    return raws, problems


def _case_files(root: Path) -> list[Path]:
    patterns = ("*.yaml", "*.yml", "*.jsonl")
    files = {p for pattern in patterns for p in root.glob(pattern)}
    cases_dir = root / "test-cases"
    if cases_dir.is_dir():
        files |= {p for pattern in (*patterns, "*.json") for p in cases_dir.rglob(pattern)}
    return sorted(f for f in files if f.is_file())


def _read_file(file: Path) -> tuple[list[RawCase], list[Problem]]:
    shown = str(file)
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(file, shown)
    if suffix == ".json":
        data, node, problem = read_json(file, shown)
        if problem is not None:
            return [], [problem]
        return unwrap(data, node, shown, 1)
    return read_yaml(file, shown)


def _read_pairs(root: Path) -> tuple[list[RawCase], list[Problem]]:
    """``inputs/NAME.json`` + ``expected/NAME.expected.json`` → one case with id NAME."""
    inputs, expected_dir = root / "inputs", root / "expected"
    raws: list[RawCase] = []
    problems: list[Problem] = []
    input_files = sorted(inputs.glob("*.json")) if inputs.is_dir() else []
    expected_files = sorted(expected_dir.glob("*.expected.json")) if expected_dir.is_dir() else []
    names = {f.stem for f in input_files}
    for orphan in expected_files:
        if orphan.name.removesuffix(".expected.json") not in names:
            problems.append(
                Problem(
                    str(orphan),
                    1,
                    "(file)",
                    f"no input file inputs/{orphan.name.removesuffix('.expected.json')}.json",
                )
            )
    for input_file in input_files:
        data, node, problem = read_json(input_file, str(input_file))
        if problem is not None:
            problems.append(problem)
            continue
        raw = RawCase(data, str(input_file), 1, node)
        if not isinstance(data, dict):
            problems.append(raw.problem([], f"expected a JSON object, got {type(data).__name__}"))
            continue
        pair = expected_dir / f"{input_file.stem}.expected.json"
        if not pair.is_file():
            problems.append(raw.problem(["expected"], f"no expected file {str(pair)!r}"))
            continue
        expected, expected_node, problem = read_json(pair, str(pair))
        if problem is not None:
            problems.append(problem)
            continue
        raws.append(_paired(raw, input_file.stem, expected, RawCase(expected, str(pair), 1, expected_node)))
    return raws, problems


def _paired(raw: RawCase, name: str, expected: Any, expected_raw: RawCase) -> RawCase:
    data = dict(raw.data)
    if "query" in data and "input" not in data:
        data["input"] = {k: data.pop(k) for k in ("query", "mode", "options") if k in data}
    data.setdefault("id", name)
    wrapper = isinstance(expected, dict) and bool({"expected", "scorers", "constraints"} & set(expected))
    if wrapper:
        data.update(expected)
    else:
        data["expected"] = expected
    return _PairedCase(data, raw.file, raw.line, raw.node, expected_raw, wrapper)


class _PairedCase(RawCase):
    """A case made of two files: fields of the expected file are located in that file."""

    def __init__(self, data: Any, file: str, line: int, node: Any, expected: RawCase, wrapper: bool):
        super().__init__(data, file, line, node)
        self.expected = expected
        self.wrapper = wrapper

    def problem(self, loc: Any, message: str) -> Problem:
        parts = list(loc)
        in_expected = parts[:1] == ["expected"] or (
            self.wrapper and parts[:1] in (["scorers"], ["constraints"])
        )
        if in_expected:
            inner = parts if self.wrapper else parts[1:]
            field = ".".join(str(p) for p in parts)
            return Problem(self.expected.file, self.expected.line_of(inner), field, message)
        return super().problem(loc, message)


def build_case(raw: RawCase) -> LoadedCase:
    """Validate one case and build its scorers; raises _CaseInvalid with every problem found."""
    if not isinstance(raw.data, dict):
        raise _CaseInvalid([raw.problem([], f"expected a mapping, got {type(raw.data).__name__}")])
    try:
        case = EvalCase.model_validate(raw.data)
    except ValidationError as error:
        raise _CaseInvalid(
            [raw.problem(e["loc"], _message(e)) for e in error.errors(include_url=False)]
        ) from None
    problems: list[Problem] = []
    scorers = _build_scorers(case, raw, problems)
    if problems:
        raise _CaseInvalid(problems)
    return LoadedCase(case, scorers, raw.file, raw.line)


def _message(error: Any) -> str:
    message = str(error["msg"])
    if error["type"] not in {"missing", "extra_forbidden"} and not isinstance(
        error.get("input"), dict | list
    ):
        value = repr(error.get("input"))
        message += f" (got {value if len(value) <= 60 else value[:57] + '...'})"
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return message


def _build_scorers(case: EvalCase, raw: RawCase, problems: list[Problem]) -> list[Scorer]:
    specs: list[tuple[str, dict[str, Any], list[str | int]]] = []
    # A null stands for "not given": generated files often carry every key of the format.
    expected = {k: v for k, v in case.expected.items() if v is not None}
    kind = expected.pop("type", None)
    if kind is not None:
        specs.append((str(kind), expected, ["expected"]))
    for index, entry in enumerate(case.scorers):
        spec = {"type": entry} if isinstance(entry, str) else dict(entry)
        name = spec.pop("type", None)
        if name is None:
            problems.append(
                raw.problem(
                    ["scorers", index, "type"], f"name a scorer (one of: {', '.join(scorer_names())})"
                )
            )
            continue
        shared = {k: v for k, v in expected.items() if k in _parameters(str(name))}
        specs.append((str(name), {**shared, **spec}, ["scorers", index]))
    listed = {name for name, _, _ in specs}
    for constraint, implied in CONSTRAINT_SCORERS.items():
        limit = getattr(case.constraints, constraint)
        if limit is not None and implied not in listed:
            specs.append((implied, {constraint: limit}, ["constraints", constraint]))
    _check_expected_keys(expected, [name for name, _, _ in specs], raw, problems)
    if not specs:
        problems.append(
            raw.problem(
                ["expected", "type"],
                f"no scorer: name one in expected.type or scorers (one of: {', '.join(scorer_names())})",
            )
        )
    scorers: list[Scorer] = []
    for name, params, loc in specs:
        scorer = _build_scorer(name, params, loc, case, raw, problems)
        if scorer is not None:
            scorers.append(scorer)
    return scorers


def _parameters(name: str) -> frozenset[str]:
    cls = SCORERS.get(name)
    return cls.parameter_names() if cls else frozenset()


def _check_expected_keys(
    expected: dict[str, Any], names: list[str], raw: RawCase, problems: list[Problem]
) -> None:
    """A key in ``expected`` that none of the case's scorers reads is a mistake, not something to ignore."""
    known = set().union(*(_parameters(name) for name in names)) if names else set()
    for key in expected:
        if key not in known and names and all(n in SCORERS for n in names):
            problems.append(
                raw.problem(
                    ["expected", key],
                    f"unknown field: none of this case's scorers ({', '.join(names)}) reads it",
                )
            )


def _build_scorer(
    name: str,
    params: dict[str, Any],
    loc: list[str | int],
    case: EvalCase,
    raw: RawCase,
    problems: list[Problem],
) -> Scorer | None:
    cls = SCORERS.get(name)
    if cls is None:
        where = [*loc, "type"] if loc[0] != "constraints" else loc
        problems.append(raw.problem(where, f"unknown scorer {name!r} (one of: {', '.join(scorer_names())})"))
        return None
    params = dict(params)
    if loc[0] == "expected":
        params = {k: v for k, v in params.items() if k in cls.parameter_names()}
    if "threshold" not in params and case.constraints.required_accuracy is not None:
        params["threshold"] = case.constraints.required_accuracy
    try:
        return cls.model_validate(params)
    except ValidationError as error:
        for item in error.errors(include_url=False):
            field_loc = [*loc, *item["loc"]] if loc[0] != "constraints" else loc
            problems.append(raw.problem(field_loc, f"{name}: {_message(item)}"))
        return None
