"""report.html opened in headless Chromium (Debian's, driven by Playwright): it loads nothing from
anywhere, logs no error, links each case to its run, and shows a model's markup as text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Dialog, Page, sync_playwright

from .conftest import MARKUP, Evaluated

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-default-apps", "--disable-sync", "--disable-gpu"]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.is_file(), "Debian's chromium is needed (apt-get install chromium; .ci/run does it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield browser
        browser.close()


class Opened:
    def __init__(self, page: Page, url: str):
        self.page = page
        self.url = url
        self.problems: list[str] = []
        self.requests: list[str] = []
        page.on(
            "console",
            lambda m: self.problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        page.on("dialog", self._dismiss)
        page.on("request", lambda r: self.requests.append(r.url))

    def _dismiss(self, dialog: Dialog) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()


@pytest.fixture
def opened(browser: Browser, evaluated: Evaluated) -> Iterator[Opened]:
    page = browser.new_page()
    url = (evaluated.results / "report.html").as_uri()
    state = Opened(page, url)
    page.goto(url)
    page.wait_for_load_state("load")
    yield state
    page.close()


def test_the_report_opens_offline_without_console_errors(opened: Opened, evaluated: Evaluated) -> None:
    page = opened.page
    assert page.title().startswith("Eval report")
    assert page.locator("#verdict").inner_text() == "FAILED"
    assert page.locator("#cases tbody tr").count() == 8
    assert page.locator("#cases tbody tr.fail").count() == 3
    measured = len(evaluated.report["metrics"])
    assert (
        page.locator("svg.chart").count() >= measured + 1
    )  # one per metric, the scorers, the latency histogram
    assert page.locator("#metrics tbody tr").count() == measured
    page.wait_for_timeout(200)
    assert opened.problems == []
    assert opened.requests == [opened.url]  # nothing but the page itself was loaded


def test_each_case_links_to_its_run(opened: Opened, evaluated: Evaluated) -> None:
    page = opened.page
    report: dict[str, Any] = evaluated.report
    run_ids = [c["attempts"][0]["run_id"] for c in report["cases"]]
    links = page.locator("#cases a.run-link")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
        f"#run-{r}" for r in run_ids
    ]
    target = f"run-{run_ids[1]}"
    assert page.locator(f"details[id='{target}']").evaluate("d => d.open") is False
    links.nth(1).click()
    assert page.locator(f"details[id='{target}']").evaluate("d => d.open") is True
    assert run_ids[1] in page.locator(f"details[id='{target}'] summary").inner_text()
    assert opened.problems == []


def test_the_table_filters(opened: Opened) -> None:
    page = opened.page
    page.get_by_role("button", name="failed (3)").click()
    assert page.locator("#cases tbody tr:visible").count() == 3
    page.get_by_role("button", name="passed (5)").click()
    assert page.locator("#cases tbody tr:visible").count() == 5
    page.get_by_role("button", name="all (8)").click()
    page.locator("#search").fill("wrong")
    assert page.locator("#cases tbody tr:visible").count() == 1
    assert opened.problems == []


def test_markup_in_an_answer_is_shown_not_run(opened: Opened, evaluated: Evaluated) -> None:
    page = opened.page
    run_id = next(c["attempts"][0]["run_id"] for c in evaluated.report["cases"] if c["case_id"] == "markup")
    assert page.locator(f"details[id='run-{run_id}'] pre.output").text_content() == MARKUP
    assert page.title() != "owned" and page.locator("details img").count() == 0
    assert opened.problems == []


def test_run_links_and_long_answers(evaluated: Evaluated) -> None:
    from agentstage.evals.report_html import MAX_OUTPUT_CHARS, render_html

    report = evaluated.report
    run_id = report["cases"][0]["attempts"][0]["run_id"]
    page = render_html(report, "https://ops.example/runs/{run_id}")
    assert f'href="https://ops.example/runs/{run_id}"' in page
    report["cases"][0]["attempts"][0]["output"] = "x" * (MAX_OUTPUT_CHARS + 5)
    page = render_html(report)
    assert "x" * MAX_OUTPUT_CHARS + "\n…[5 more characters in report.json]" in page
    assert "x" * (MAX_OUTPUT_CHARS + 1) not in page
