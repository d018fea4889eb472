"""Reading case files while keeping where each case and field came from.

A malformed case must be reported with its file, line and field, so YAML and JSON documents are
composed into nodes (which carry their line) alongside the data; JSONL cases are one per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Problem:
    """A case that cannot run: where it is, which field, and why."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


@dataclass
class RawCase:
    """One case's data as read, before validation, with a way to find the line of any field."""

    data: Any
    file: str
    line: int
    node: yaml.Node | None = None

    def line_of(self, loc: Sequence[str | int]) -> int:
        """The line of the deepest part of ``loc`` present in the file (the case's line at worst)."""
        node, line = self.node, self.line
        for part in loc:
            found = _child(node, part)
            if found is None:
                break
            line, node = found
        return line

    def problem(self, loc: Sequence[str | int], message: str) -> Problem:
        field = ".".join(str(p) for p in loc) or "(case)"
        return Problem(self.file, self.line_of(loc), field, message)


def _child(node: yaml.Node | None, part: str | int) -> tuple[int, yaml.Node] | None:
    """The line of a mapping key (or a sequence item) and the node of its value."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                found: yaml.Node = value
                return key.start_mark.line + 1, found
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item: yaml.Node = node.value[part]
        return item.start_mark.line + 1, item
    return None


def _value(node: yaml.Node | None, part: str | int) -> yaml.Node | None:
    found = _child(node, part)
    return found[1] if found else None


def _documents(text: str) -> Iterator[tuple[Any, yaml.Node | None]]:
    """(data, node) for each YAML document; raises yaml.YAMLError."""
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            yield loader.construct_document(node), node
    finally:
        loader.dispose()


def unwrap(data: Any, node: yaml.Node | None, file: str, line: int) -> tuple[list[RawCase], list[Problem]]:
    """The cases in one document: ``test_case: {...}``, ``test_cases: [...]``, a list, or a bare case."""
    if data is None:
        return [], []
    if isinstance(data, dict) and set(data) == {"test_case"}:
        inner = _value(node, "test_case")
        return [RawCase(data["test_case"], file, _line(inner, line), inner)], []
    if isinstance(data, dict) and set(data) == {"test_cases"}:
        return unwrap(data["test_cases"], _value(node, "test_cases"), file, line)
    if isinstance(data, list):
        cases: list[RawCase] = []
        problems: list[Problem] = []
        for index, item in enumerate(data):
            item_node = _value(node, index)
            found, wrong = unwrap(item, item_node, file, _line(item_node, line))
            cases += found
            problems += wrong
        return cases, problems
    if isinstance(data, dict):
        return [RawCase(data, file, _line(node, line), node)], []
    return [], [
        Problem(file, line, "(document)", f"expected a test case (a mapping), got {type(data).__name__}")
    ]


def _line(node: yaml.Node | None, default: int) -> int:
    return node.start_mark.line + 1 if node is not None else default


def read_text(path: Path, shown: str) -> tuple[str | None, Problem | None]:
    try:
        return path.read_text(encoding="utf-8"), None
    except UnicodeDecodeError:
        return None, Problem(shown, 1, "(file)", "not UTF-8 text")
    except OSError as error:
        return None, Problem(shown, 1, "(file)", f"cannot read it: {error.strerror}")


def read_yaml(path: Path, shown: str) -> tuple[list[RawCase], list[Problem]]:
    text, problem = read_text(path, shown)
    if text is None:
        return [], [problem] if problem else []
    cases: list[RawCase] = []
    problems: list[Problem] = []
    try:
        for data, node in _documents(text):
            found, wrong = unwrap(data, node, shown, _line(node, 1))
            cases += found
            problems += wrong
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(error, "problem", None) or str(error)
        problems.append(Problem(shown, line, "(file)", f"not valid YAML: {reason}"))
    return cases, problems


def read_jsonl(path: Path, shown: str) -> tuple[list[RawCase], list[Problem]]:
    text, problem = read_text(path, shown)
    if text is None:
        return [], [problem] if problem else []
    cases: list[RawCase] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(
                Problem(shown, number, "(line)", f"not valid JSON: {error.msg} (column {error.colno})")
            )
            continue
        if not isinstance(data, dict):
            problems.append(
                Problem(shown, number, "(line)", f"expected a JSON object, got {type(data).__name__}")
            )
            continue
        if set(data) == {"test_case"} and isinstance(data["test_case"], dict):
            data = data["test_case"]
        cases.append(RawCase(data, shown, number))
    return cases, problems


def read_json(path: Path, shown: str) -> tuple[Any, yaml.Node | None, Problem | None]:
    """A JSON document and, where it composes as YAML (almost always), its nodes for line numbers."""
    text, problem = read_text(path, shown)
    if text is None:
        return None, None, problem
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return (
            None,
            None,
            Problem(shown, error.lineno, "(file)", f"not valid JSON: {error.msg} (column {error.colno})"),
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        node = None
    return data, node, None
