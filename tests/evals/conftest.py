"""A dataset of every format, a scripted model that answers some cases right and some wrong, and
one real ``agent eval run`` of it shared by the tests of a module."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli

USAGE = {"input_tokens": 10, "output_tokens": 5}
MARKUP = '<script>document.title = "owned"</script><img src=x onerror="document.title=\'owned\'"> **bold**'


def rule(match: str, **answer: Any) -> dict[str, Any]:
    return {"match": match, "usage": USAGE, **answer}


# The model under test. JSON actions (no native tool calls), so a rule can match the tool's observation.
AGENT_SCRIPT = {
    "native_tools": False,
    "rules": [
        rule("Observation from math.calculate", json={"answer": "12 times 7 is 84."}),
        rule("12 times 7", json={"tool": "math.calculate", "arguments": {"expression": "12 * 7"}}),
        rule("capital of France", text="The capital of France is Paris."),
        rule("2 plus 2", text="2 plus 2 is 5."),
        rule("capital of Japan", json={"city": "Tokyo"}),
        rule("broken", error={"code": "provider_unavailable", "message": "connection refused"}),
        rule("primary colours", text="Red, blue and yellow."),
        rule("WAL", text="WAL mode appends changes to a log before they reach the database."),
        rule("markup", text=MARKUP),
    ],
    "responses": [{"text": "I do not know.", "usage": USAGE}],
}
# The judge: only the judge profile knows how to grade.
JUDGE_SCRIPT = {
    "rules": [rule("grading an AI agent", json={"reasoning": "Accurate and concise.", "score": 0.8})]
}

CASES_YAML = """\
- test_case:
    id: multiply
    category: math
    input:
      query: "What is 12 times 7?"
      mode: react
      options: {tools: [math.calculate]}
    expected: {type: numeric, content: 84}
    scorers:
      - {type: tool_used, tools: [math.calculate]}
      - {type: tool_sequence, sequence: [math.calculate], exact: true}
    constraints: {max_steps: 4}
- test_case:
    id: wrong-sum
    category: math
    input: {query: "What is 2 plus 2?", mode: chat}
    expected: {type: numeric, content: 4}
- test_case:
    id: city-json
    category: json
    input: {query: "Give the capital of Japan as JSON.", mode: chat}
    expected:
      type: json_schema
      schema: {type: object, required: [city, country], properties: {city: {type: string}, country: {type: string}}}
- test_case:
    id: broken
    category: chat
    input: {query: "A broken question", mode: chat}
    expected: {type: contains, content: anything}
- test_case:
    id: judged
    category: chat
    input: {query: "Explain WAL in one sentence.", mode: chat}
    scorers:
      - {type: llm_judge, rubric: "Explains write-ahead logging correctly in one sentence."}
- test_case:
    id: markup
    category: chat
    input: {query: "Say something with markup", mode: chat}
    expected: {type: contains, content: bold}
"""
COLOURS = {
    "id": "colours",
    "category": "chat",
    "input": {"query": "Name the three primary colours."},
    "expected": {"type": "keywords", "content": None, "keywords": ["red", "blue", "yellow"], "schema": None,
                 "tolerance": None},
    "constraints": {"max_tokens": 1000, "max_latency_ms": None, "required_accuracy": None},
}  # fmt: skip
PASSING = {"capital", "multiply", "judged", "markup", "colours"}
FAILING = {"wrong-sum", "city-json", "broken"}


def write_dataset(root: Path) -> Path:
    (root / "inputs").mkdir(parents=True)
    (root / "expected").mkdir()
    (root / "test-cases").mkdir()
    capital = {"category": "chat", "query": "What is the capital of France?", "mode": "chat"}
    (root / "inputs/capital.json").write_text(json.dumps(capital), encoding="utf-8")
    expected = {"type": "contains", "content": "Paris"}
    (root / "expected/capital.expected.json").write_text(json.dumps(expected), encoding="utf-8")
    (root / "test-cases/cases.yaml").write_text(CASES_YAML, encoding="utf-8")
    (root / "colours.jsonl").write_text(json.dumps(COLOURS) + "\n", encoding="utf-8")
    return root


def configure(cli: Cli, agent_script: dict[str, Any] | None = AGENT_SCRIPT) -> None:
    """Profile ``t`` answers from AGENT_SCRIPT, profile ``judge`` from JUDGE_SCRIPT. With no script,
    the provider is switched off: its script file is gone, so any model call fails."""
    agent_file, judge_file = cli.home / "agent-script.json", cli.home / "judge-script.json"
    for file, script in ((agent_file, agent_script), (judge_file, JUDGE_SCRIPT if agent_script else None)):
        if script is None:
            file.unlink(missing_ok=True)
        else:
            file.write_text(json.dumps(script), encoding="utf-8")
    cli.configure(
        {
            "providers": {
                "s": {"type": "scripted", "script": str(agent_file)},
                "j": {"type": "scripted", "script": str(judge_file)},
            },
            "profiles": {"t": {"chain": [{"provider": "s"}]}, "judge": {"chain": [{"provider": "j"}]}},
            "default_profile": "t",
            "retry": {"max_attempts": 1},
        }
    )


@dataclass
class Evaluated:
    cli: Cli
    dataset: Path
    results: Path
    done: subprocess.CompletedProcess[str]

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.results / "report.json").read_text(encoding="utf-8"))
        return data

    def copy_dataset(self, target: Path) -> Path:
        shutil.copytree(self.dataset, target)
        return target


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    """One real ``agent eval run`` over the mixed dataset, shared by the module's tests."""
    root = tmp_path_factory.mktemp("eval")
    home = root / "home"
    home.mkdir()
    cli = Cli(home)
    configure(cli)
    dataset = write_dataset(root / "dataset")
    done = cli("eval", "run", str(dataset), "--judge-profile", "judge", "--parallel", "3")
    return Evaluated(cli, dataset, dataset / "results", done)
