"""The embedded default answers the README's sample questions right, through the tools, with the
expected answers computed from the sample database at run time."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentstage.resources import sample_database
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService
from agentstage.runtime.wiring import build_service
from conftest import Cli, make_settings

pytestmark = [pytest.mark.anyio, pytest.mark.model]


def query(sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"{sample_database().resolve().as_uri()}?mode=ro", uri=True) as connection:
        return [tuple(row) for row in connection.execute(sql)]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunService]:
    home = tmp_path_factory.mktemp("answers")
    async with build_service(make_settings(home, {})) as running:
        yield running


async def answer(service: RunService, question: str, mode: str = "auto") -> tuple[str, list[str]]:
    final = await service.run(RunRequest(input=question, mode=mode))
    assert final.status == "completed", (final.error_code, final.error_message)
    events = await service.events(final.id)
    tools = [e.data["tool"] for e in events if e.type == "tool.call"]
    assert final.output
    return final.output, tools


async def test_arithmetic_is_done_by_the_calculator(service: RunService) -> None:
    for question, expected in [("What is 12 times 7?", 12 * 7), ("What is 17 * 23?", 17 * 23)]:
        output, tools = await answer(service, question)
        assert tools == ["math.calculate:v1"]
        assert output.strip() == str(expected)


async def test_the_top_products_come_from_the_database(service: RunService) -> None:
    top = query(
        "SELECT p.name FROM orders o JOIN products p ON o.product_id = p.id "
        "GROUP BY p.id ORDER BY SUM(o.total) DESC LIMIT 3"
    )
    output, tools = await answer(service, "Top 3 products by revenue")
    assert tools == ["sql.query:v1"]
    assert [line.split(":")[0] for line in output.splitlines()] == [row[0] for row in top]


async def test_a_count_and_a_summary(service: RunService) -> None:
    ((orders, revenue),) = query("SELECT COUNT(*), SUM(total) FROM orders")
    output, _ = await answer(service, "How many orders are there?")
    assert output.strip() == str(orders)
    summary, _ = await answer(service, "Summarize the sales data")
    assert str(orders) in summary and f"{revenue:.1f}" in summary


async def test_a_plain_question_is_answered_in_chat(service: RunService) -> None:
    output, tools = await answer(service, "What is the capital of France?")
    assert tools == [] and "Paris" in output


def test_the_cli_answer_names_its_model_and_calls_the_tool(cli: Cli, home: Path) -> None:
    done = cli("run", "What is 12 times 7?", "--mode", "react", "--output", "json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["status"] == "completed" and body["output"] == "84"
    assert "local/smollm2-135m-instruct-q4_1" in done.stderr.splitlines()[-1]
