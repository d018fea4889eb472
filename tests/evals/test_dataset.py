"""Loading datasets in every accepted layout; malformed cases named by file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentstage.errors import InvalidInputError
from agentstage.evals.dataset import load_dataset

# The JSONL format other tools generate: every key of the format present, unused ones null.
JSONL_CASE = {
    "id": "q-001",
    "category": "arithmetic",
    "input": {"query": "What is 6 times 7?"},
    "expected": {"type": "numeric", "content": 42, "keywords": None, "schema": None, "tolerance": 0.001},
    "constraints": {"max_tokens": 500, "max_latency_ms": None, "required_accuracy": None},
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    return [str(p) for p in load_dataset(path).problems]


def test_every_layout_in_one_directory(tmp_path: Path) -> None:
    write(tmp_path / "inputs/capital.json", json.dumps({"category": "chat", "query": "Capital of France?"}))
    write(tmp_path / "expected/capital.expected.json", json.dumps({"type": "contains", "content": "Paris"}))
    write(
        tmp_path / "test-cases/math.yaml",
        """\
- test_case:
    id: add
    category: math
    input: {query: "2 + 2?", mode: react, options: {tools: [math.calculate]}}
    expected: {type: numeric, content: 4}
    scorers: [{type: tool_used, tools: [math.calculate]}]
    constraints: {max_latency_ms: 5000, max_steps: 3}
- test_case:
    id: words
    input: "Name the primary colours"
    expected: {type: keywords, keywords: [red, blue, yellow], match: any}
""",
    )
    write(
        tmp_path / "test-cases/more.yaml",
        "test_case:\n  id: doc1\n  input: {query: a}\n  expected: {type: exact, content: a}\n---\n"
        "test_case:\n  id: doc2\n  input: {query: b}\n  expected: {type: regex, content: '^b$'}\n",
    )
    write(tmp_path / "generated.jsonl", json.dumps(JSONL_CASE) + "\n\n")
    write(tmp_path / "results/old.run.json", "{}")  # results are never read as cases
    dataset = load_dataset(tmp_path)
    assert dataset.problems == []
    by_id = {c.id: c for c in dataset.cases}
    assert sorted(by_id) == ["add", "capital", "doc1", "doc2", "q-001", "words"]
    assert [s.name for s in by_id["add"].scorers] == ["numeric", "tool_used", "latency", "max_steps"]
    assert by_id["add"].case.input.mode is not None and by_id["add"].case.input.options.tools == [
        "math.calculate"
    ]
    assert (
        by_id["words"].case.category == "general"
        and by_id["words"].case.input.query == "Name the primary colours"
    )
    assert [s.name for s in by_id["q-001"].scorers] == ["numeric", "tokens"]
    assert by_id["capital"].source == f"{tmp_path / 'inputs/capital.json'}:1"
    assert by_id["add"].line == 2 and by_id["doc2"].line == 7
    assert dataset.categories() == ["arithmetic", "chat", "general", "math"]


def test_a_generated_jsonl_file_works_as_the_dataset_path(tmp_path: Path) -> None:
    lines = [json.dumps({**JSONL_CASE, "id": f"q-{i}"}) for i in range(3)]
    dataset = load_dataset(write(tmp_path / "bench.jsonl", "\n".join(lines)))
    assert [c.id for c in dataset.cases] == ["q-0", "q-1", "q-2"] and dataset.root == tmp_path


def test_malformed_yaml_cases_are_located_and_the_others_load(tmp_path: Path) -> None:
    path = write(
        tmp_path / "cases.yaml",
        """\
- test_case:
    id: good
    input: {query: hi}
    expected: {type: contains, content: hello}
- test_case:
    id: no-query
    input:
      mode: chat
    expected: {type: contains, content: x}
- test_case:
    id: typo
    input: {query: q}
    expected:
      type: numeric
      content: 3
      tolerence: 0.1
- test_case:
    id: unknown-scorer
    input: {query: q}
    scorers:
      - type: sentiment
- test_case:
    id: bad-limit
    input: {query: q}
    expected: {type: exact, content: x}
    constraints:
      max_tokens: -5
- test_case:
    id: bad-regex
    input: {query: q}
    expected:
      type: regex
      pattern: "([a-z"
""",
    )
    dataset = load_dataset(path)
    assert [c.id for c in dataset.cases] == ["good"]
    found = {(p.line, p.field) for p in dataset.problems}
    assert (7, "input.query") in found  # the `input:` that lacks it
    assert (16, "expected.tolerence") in found
    assert (21, "scorers.0.type") in found
    assert (27, "constraints.max_tokens") in found
    assert (33, "expected.pattern") in found
    messages = "\n".join(str(p) for p in dataset.problems)
    assert f"{path}:16: expected.tolerence: unknown field" in messages
    assert "unknown scorer 'sentiment'" in messages and "(got -5)" in messages
    assert "not a valid regular expression" in messages


def test_malformed_jsonl_lines(tmp_path: Path) -> None:
    bad_type = {**JSONL_CASE, "id": "q-3", "expected": {"type": "numeric", "content": "many"}}
    lines = [json.dumps(JSONL_CASE), "{not json", json.dumps({"id": "q-2"}), json.dumps(bad_type), "[1, 2]"]
    path = write(tmp_path / "cases.jsonl", "\n".join(lines))
    dataset = load_dataset(path)
    assert [c.id for c in dataset.cases] == ["q-001"]
    assert [(p.line, p.field) for p in dataset.problems] == [
        (2, "(line)"),
        (3, "input"),
        (4, "expected.content"),
        (5, "(line)"),
    ]
    assert "not valid JSON" in dataset.problems[0].message and "column 2" in dataset.problems[0].message


def test_directory_pairs_report_missing_halves_and_point_into_the_expected_file(tmp_path: Path) -> None:
    write(tmp_path / "inputs/alone.json", json.dumps({"query": "q"}))
    write(tmp_path / "expected/orphan.expected.json", json.dumps({"type": "exact", "content": "x"}))
    write(tmp_path / "inputs/bad.json", json.dumps({"query": "q"}))
    write(
        tmp_path / "expected/bad.expected.json",
        '{\n  "type": "json_schema",\n  "schema": {"type": "nope"}\n}\n',
    )
    write(tmp_path / "inputs/broken.json", '{"query": ')
    problems = problems_of(tmp_path)
    assert any("inputs/alone.json:1: expected: no expected file" in p for p in problems)
    assert any(
        "expected/orphan.expected.json:1: (file): no input file inputs/orphan.json" in p for p in problems
    )
    assert any("expected/bad.expected.json:3: expected.schema: json_schema: Value error, not a valid JSON Schema" in p
               for p in problems)  # fmt: skip
    assert any("inputs/broken.json:1: (file): not valid JSON" in p for p in problems)


def test_duplicate_ids_and_syntax_errors(tmp_path: Path) -> None:
    write(
        tmp_path / "a.yaml", "test_case: {id: same, input: {query: q}, expected: {type: exact, content: x}}\n"
    )
    write(
        tmp_path / "b.yaml",
        "\n\ntest_case: {id: same, input: {query: q}, expected: {type: exact, content: y}}\n",
    )
    write(tmp_path / "c.yaml", "test_case:\n  id: x\n  input: [unclosed\n")
    dataset = load_dataset(tmp_path)
    assert [c.id for c in dataset.cases] == ["same"]
    messages = [str(p) for p in dataset.problems]
    assert any(
        f"b.yaml:3: id: duplicate case id 'same' (first defined at {tmp_path / 'a.yaml'}:1)" in m
        for m in messages
    )
    assert any("c.yaml" in m and "not valid YAML" in m for m in messages)


def test_unusable_paths_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(InvalidInputError, match="no test cases found"):
        load_dataset(tmp_path)
    with pytest.raises(InvalidInputError, match=r"not \.yaml"):
        load_dataset(write(tmp_path / "cases.csv", "a,b"))
    dataset = load_dataset(write(tmp_path / "one.jsonl", json.dumps(JSONL_CASE)))
    with pytest.raises(InvalidInputError, match="unknown category 'nope'"):
        dataset.select(categories=["nope"])
    with pytest.raises(InvalidInputError, match="unknown case id 'q-9'"):
        dataset.select(ids=["q-9"])
    assert [c.id for c in dataset.select(categories=["arithmetic"]).cases] == ["q-001"]


def test_the_bundled_sample_set_loads_cleanly() -> None:
    root = Path(__file__).resolve().parents[2] / "samples/eval"
    dataset = load_dataset(root)
    assert dataset.problems == []
    by_id = {c.id: c for c in dataset.cases}
    assert by_id["capital-of-france"].case.input.query == "What is the capital of France?"
    scorers = {c.id: {s.name for s in c.scorers} for c in dataset.cases}
    tools = {t for c in dataset.cases for s in c.scorers for t in getattr(s, "tools", [])}
    assert tools == {"math.calculate", "sql.query"}
    assert any("json_schema" in names for names in scorers.values())
    assert set(dataset.categories()) == {"chat", "json", "math", "sales"}
    assert all(c.case.input.options.max_duration for c in dataset.cases if c.case.input.options.tools)
