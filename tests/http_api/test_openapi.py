"""The API description: every route in it, the committed copy current, and the live server true to it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance
from schemathesis.core.result import Ok

from .conftest import Server

ROOT = Path(__file__).resolve().parents[2]


def test_docs_openapi_json_is_current() -> None:
    spec = importlib.util.spec_from_file_location("write_openapi", ROOT / "scripts" / "write_openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert module.render() == committed, "docs/openapi.json is stale: run python scripts/write_openapi.py"


def test_every_route_is_described() -> None:
    document = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    expected = {
        ("post", "/api/v1/agent/run"), ("post", "/api/v1/agent/run/stream"), ("post", "/api/v1/agent/batch"),
        ("get", "/api/v1/agent/batch/{batch_id}"), ("get", "/api/v1/agent/status/{run_id}"),
        ("delete", "/api/v1/agent/cancel/{run_id}"), ("get", "/api/v1/agent/runs"),
        ("get", "/api/v1/agent/runs/{run_id}/events"), ("post", "/api/v1/conversations"),
        ("get", "/api/v1/conversations/{conversation_id}"), ("delete", "/api/v1/conversations/{conversation_id}"),
        ("post", "/api/v1/conversations/{conversation_id}/messages"),
        ("get", "/api/v1/conversations/{conversation_id}/history"), ("get", "/api/v1/tools"),
        ("get", "/api/v1/tools/{tool_id}"), ("post", "/api/v1/tools/{tool_id}/execute"),
        ("delete", "/api/v1/tools/{tool_id}"), ("get", "/api/v1/config"), ("put", "/api/v1/config"),
        ("get", "/api/v1/config/profiles"), ("post", "/api/v1/config/profiles"), ("get", "/health/live"),
        ("get", "/health/ready"), ("get", "/health/startup"),
    }  # fmt: skip
    described = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert expected <= described
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert "application/problem+json" in response["content"], (method, path, status)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = Server(tmp_path_factory.mktemp("fuzz-home"))
    server.key = server.agent("keys", "create", "--name", "fuzz", "--rate", "1000000").strip()
    server.headers = {"Authorization": f"Bearer {server.key}"}
    server.start()
    yield server
    server.stop()


def test_the_live_api_matches_its_description(fuzz_server: Server) -> None:
    """schemathesis generates requests for every operation: no 5xx, every answer true to the schema."""
    api = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    problems: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        assert isinstance(result, Ok), f"an operation the schema cannot describe: {result.err()!r}"
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                headers=fuzz_server.headers,
                checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
                timeout=30,
            )

        try:
            check()
        except Exception as failure:  # collect every operation's failure, then report them all
            problems.append(f"{operation.method.upper()} {operation.path}: {failure}")
    assert operations >= 20
    assert problems == []
