#!/usr/bin/env python3
"""Answer quality of the embedded model: questions a new user asks, scored against answers
computed at run time (from samples/data/sales.db by SQL, or by Python), never typed in by hand —
except the facts of the plain-chat cases, which no computation can give.

The cases are a dataset: ``build_cases()`` makes them, writes them as JSONL (one case per line:
{"id", "category", "input": {"query"}, "expected": {"type", "content", "keywords",
"tolerance"}}) and ``agent eval run`` scores them — one way to measure answer quality. For each
mode (auto, react, planner) it prints accuracy and the median seconds per run (the eval's
latency p50), overall and per category. Aim: >= 80 % correct in auto, median < 8 s per run on
2 cores. The eval's reports stay in the printed directory (report.html shows every answer).

    python benchmarks/embedded_quality.py [--modes auto,react,planner] [--category count] [--write cases.jsonl]
"""

from __future__ import annotations

import argparse
import calendar
import json
import math
import os
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import machine, temporary_home

from agentstage.resources import sample_database
from agentstage.settings import load_settings

AGENT = str(Path(sys.executable).parent / "agent")


def _query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"{sample_database().resolve().as_uri()}?mode=ro", uri=True) as connection:
        return [tuple(row) for row in connection.execute(sql, params)]


def _one(sql: str, *params: Any) -> Any:
    return _query(sql, *params)[0][0]


def _month_name(month: str) -> str:
    year, number = month.split("-")
    return f"{calendar.month_name[int(number)]} {year}"


def numeric(value: float, tolerance: float = 0.01) -> dict[str, Any]:
    return {"type": "numeric", "content": value, "tolerance": tolerance}


def contains(text: str) -> dict[str, Any]:
    return {"type": "contains", "content": text}


def keywords(*words: str) -> dict[str, Any]:
    return {"type": "keywords", "keywords": list(words)}


def _arithmetic() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("What is 12 times 7?", numeric(12 * 7)),
        ("What is 17 * 23?", numeric(17 * 23)),
        ("How much is 1024 divided by 16?", numeric(1024 / 16)),
        ("Add 345 and 678", numeric(345 + 678)),
        ("What is the square root of 144?", numeric(math.sqrt(144))),
        ("Calculate 2 to the power of 12", numeric(2**12)),
        ("What is 25% of 480?", numeric(480 * 25 / 100)),
        ("What is 1000 minus 256?", numeric(1000 - 256)),
    ]


def _counts() -> list[tuple[str, dict[str, Any]]]:
    march = "2025-03"
    return [
        ("How many orders are in the database?", numeric(_one("SELECT COUNT(*) FROM orders"))),
        ("What is the number of customers?", numeric(_one("SELECT COUNT(*) FROM customers"))),
        (
            "How many customers are in the West region?",
            numeric(_one("SELECT COUNT(*) FROM customers WHERE region = 'West'")),
        ),
        (
            "How many products are in the Footwear category?",
            numeric(_one("SELECT COUNT(*) FROM products WHERE category = 'Footwear'")),
        ),
        (
            f"How many orders were placed in {_month_name(march)}?",
            numeric(_one("SELECT COUNT(*) FROM orders WHERE substr(order_date, 1, 7) = ?", march)),
        ),
    ]


def _sums() -> list[tuple[str, dict[str, Any]]]:
    june = "2025-06"
    return [
        ("What is our total revenue?", numeric(_one("SELECT SUM(total) FROM orders"), 0.5)),
        (
            f"How much revenue did we make in {_month_name(june)}?",
            numeric(_one("SELECT SUM(total) FROM orders WHERE substr(order_date, 1, 7) = ?", june), 0.5),
        ),
        ("How many items were sold in total?", numeric(_one("SELECT SUM(quantity) FROM orders"))),
        ("What is the average value of an order?", numeric(_one("SELECT AVG(total) FROM orders"), 0.01)),
    ]


def _top() -> list[tuple[str, dict[str, Any]]]:
    by_revenue = _query(
        "SELECT p.name FROM orders o JOIN products p ON o.product_id = p.id "
        "GROUP BY p.id ORDER BY SUM(o.total) DESC LIMIT 3"
    )
    units = _one(
        "SELECT p.name FROM orders o JOIN products p ON o.product_id = p.id "
        "GROUP BY p.id ORDER BY SUM(o.quantity) DESC LIMIT 1"
    )
    spender = _one(
        "SELECT c.name FROM orders o JOIN customers c ON o.customer_id = c.id "
        "GROUP BY c.id ORDER BY SUM(o.total) DESC LIMIT 1"
    )
    category = _one(
        "SELECT p.category FROM orders o JOIN products p ON o.product_id = p.id "
        "GROUP BY p.category ORDER BY SUM(o.total) DESC LIMIT 1"
    )
    return [
        ("Top 3 products by revenue", keywords(*(row[0] for row in by_revenue))),  # from the README
        ("What is the best-selling product by units sold?", contains(units)),
        ("Which customer has spent the most money?", contains(spender)),
        ("Which product category brings in the most revenue?", contains(category)),
    ]


def _regions() -> list[tuple[str, dict[str, Any]]]:
    per_region = _query(
        "SELECT c.region, SUM(o.total) FROM orders o JOIN customers c ON o.customer_id = c.id "
        "GROUP BY c.region ORDER BY c.region"
    )
    best = max(per_region, key=lambda row: row[1])[0]
    north = _one(
        "SELECT COUNT(*) FROM orders o JOIN customers c ON o.customer_id = c.id WHERE c.region = 'North'"
    )
    east = _one(
        "SELECT SUM(o.total) FROM orders o JOIN customers c ON o.customer_id = c.id WHERE c.region = 'East'"
    )
    return [
        ("Show total sales for each region", keywords(*(f"{r}: {int(v)}" for r, v in per_region))),
        ("Which region generated the most sales?", contains(best)),
        ("How many orders did customers in the North region place?", numeric(north)),
        ("What were total sales in the East region?", numeric(east, 0.5)),
    ]


def _months() -> list[tuple[str, dict[str, Any]]]:
    busiest = _one("SELECT substr(order_date, 1, 7) FROM orders GROUP BY 1 ORDER BY COUNT(*) DESC, 1 LIMIT 1")
    best = _one("SELECT substr(order_date, 1, 7) FROM orders GROUP BY 1 ORDER BY SUM(total) DESC LIMIT 1")
    months = [row[0] for row in _query("SELECT DISTINCT substr(order_date, 1, 7) FROM orders ORDER BY 1")]
    return [
        ("In which month were the most orders placed?", contains(busiest)),
        ("What was the best month for revenue?", contains(best)),
        ("Show the monthly revenue", keywords(*months)),
    ]


def _readme() -> list[tuple[str, dict[str, Any]]]:
    """The README's own examples, answers computed like the others."""
    orders, revenue = _query("SELECT COUNT(*), SUM(total) FROM orders")[0]
    per_region = _query(
        "SELECT c.region FROM orders o JOIN customers c ON o.customer_id = c.id "
        "GROUP BY c.region ORDER BY SUM(o.total) DESC LIMIT 1"
    )
    return [
        ("Summarize the sales data", keywords(str(orders), f"{revenue:.1f}")),
        ("Total sales per region, then the best one", contains(per_region[0][0])),
    ]


def _chat() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("What is the capital of France?", contains("Paris")),  # the one fact no computation gives
        ("What month comes after March?", contains(calendar.month_name[4])),
        ("How many days are in a week?", numeric(len(calendar.day_name))),
    ]


CATEGORIES: dict[str, Callable[[], list[tuple[str, dict[str, Any]]]]] = {
    "arithmetic": _arithmetic,
    "count": _counts,
    "sum": _sums,
    "top_n": _top,
    "per_region": _regions,
    "per_month": _months,
    "readme": _readme,
    "chat": _chat,
}


def build_cases() -> list[dict[str, Any]]:
    """Every case, expected values computed now from the sample database or by Python."""
    cases = []
    for category, make in CATEGORIES.items():
        for index, (query, expected) in enumerate(make(), start=1):
            expected = {"content": None, "keywords": None, "tolerance": None, **expected}
            cases.append(
                {
                    "id": f"{category}-{index}",
                    "category": category,
                    "input": {"query": query},
                    "expected": expected,
                }
            )
    return cases


def write_cases(path: Path) -> None:
    path.write_text("".join(json.dumps(case) + "\n" for case in build_cases()), encoding="utf-8")


def run_mode(mode: str, dataset: Path, home: Path, categories: list[str]) -> tuple[dict[str, Any], float]:
    """``agent eval run`` on the dataset in one mode: its report, and CPU seconds per case."""
    results = dataset.parent / f"results-{mode}"
    command = [AGENT, "eval", "run", str(dataset), "--mode", mode, "--parallel", "1", "--json"]
    command += ["--results", str(results)] + [f"--category={c}" for c in categories]
    before = _children_cpu()
    done = subprocess.run(
        command, env={**os.environ, "AGENT_HOME": str(home)}, capture_output=True, text=True
    )
    if done.returncode not in (0, 1):  # 1: a case failed, which is what is being measured
        raise SystemExit(f"agent eval run failed ({done.returncode}): {done.stderr.strip()}")
    report = json.loads(done.stdout)
    return report, (_children_cpu() - before) / max(1, report["summary"]["cases"])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _value(metrics: dict[str, Any], name: str) -> float:
    return float(metrics.get(name, {}).get("value") or 0.0)


def show(mode: str, report: dict[str, Any], cpu: float, verbose: bool) -> None:
    if verbose:
        for case in report["cases"]:
            attempt = case["attempts"][-1]
            answer = attempt.get("output") or f"[{attempt.get('status')}] {attempt.get('error') or ''}"
            mark = "ok " if case["passed"] else "BAD"
            print(f"  {mark} {case['case_id']:<13} {str(answer).replace(chr(10), ' | ')[:110]}", flush=True)
    summary, metrics = report["summary"], report["metrics"]
    parts = [f"{name} {group['passed']}/{group['cases']}" for name, group in report["categories"].items()]
    median = _value(metrics, "latency_p50_ms") / 1000
    print(
        f"{mode:<8} accuracy {summary['passed']}/{summary['cases']} = {_value(metrics, 'accuracy'):.0%} · "
        f"median {median:.2f} s/run ({cpu:.2f} CPU s per case; load average {os.getloadavg()[0]:.1f}) · "
        + " · ".join(parts),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", default="auto,react,planner")
    parser.add_argument("--category", action="append", default=[], help="only this category (repeatable)")
    parser.add_argument("--write", type=Path, default=None, help="write the cases as JSONL and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every answer")
    args = parser.parse_args()
    if args.write is not None:
        write_cases(args.write)
        print(f"wrote {len(build_cases())} cases to {args.write}")
        return
    home = temporary_home()
    dataset = home / "embedded_quality.jsonl"
    write_cases(dataset)
    settings = load_settings(environ={"AGENT_HOME": str(home)})
    entry = settings.profile(None).chain[0]
    options = settings.providers[entry.provider].options()
    model = entry.model or options.get("model_path") or "bundled SmolLM2-135M-Instruct (Q4_1)"
    print(f"machine: {machine()}")
    print(
        f"model: profile {settings.default_profile!r} → {entry.provider}/{model} · {len(build_cases())} cases"
    )
    print(f"dataset and reports: {dataset.parent}", flush=True)
    for mode in args.modes.split(","):
        report, cpu = run_mode(mode, dataset, home, args.category)
        show(mode, report, cpu, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
