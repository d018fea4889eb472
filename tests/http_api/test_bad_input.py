"""Bad input over HTTP: each gets a precise 4xx problem, the server keeps serving, nothing half-written."""

from __future__ import annotations

import httpx
import pytest

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str, mentions: str = "") -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["code"] == code and body["type"].endswith(code)
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    assert mentions in str(body["detail"]) + str(body.get("errors", ""))
    return dict(body)


@pytest.mark.parametrize(
    ("content", "status", "code", "mentions"),
    [
        (b'{"input": "hi"', 400, "malformed_json", "not valid JSON"),
        (b'{"input": "\xff\xfe"}', 400, "malformed_body", ""),
        (b'{"input": 42}', 422, "invalid_request", "input"),
        (b'{"input": "hi", "mode": 3}', 422, "invalid_request", "mode"),
        (b'{"input": "hi", "colour": "blue"}', 422, "invalid_request", "colour"),
        (b'{"input": "hi", "options": {"max_steps": 0}}', 422, "invalid_request", "options.max_steps"),
        (b'{"input": ""}', 422, "empty_input", "empty"),
        (b'{"input": "hi", "profile": "nope"}', 422, "unknown_profile", "'nope'"),
        (b'{"input": "hi", "mode": "telepathy"}', 422, "unknown_mode", "'telepathy'"),
        (b'{"input": "hi", "conversation_id": "nope"}', 404, "conversation_not_found", "'nope'"),
        (b"[1, 2]", 422, "invalid_request", ""),
        (b'{"input": "' + b"x" * 100_001 + b'"}', 422, "input_too_long", "100000"),
        (b'{"input": "a\\u0000b"}', 422, "input_has_nul", "U+0000"),
        # JSON Python reads but no store can keep: refused when the body is read, saying where.
        (
            b'{"input": "half \\ud83d a pair"}',
            400,
            "malformed_json",
            "unpaired surrogate (\\ud83d) in the string at input",
        ),
        (b'{"input": "raw \xed\xa0\x80 bytes"}', 400, "malformed_json", "unpaired surrogate (\\ud800)"),
        (
            b'{"input": "hi", "options": {"params": {"stop": ["ok", "\\udc80"]}}}',
            400,
            "malformed_json",
            "options.params.stop[1]",
        ),
        (
            '{"input": "hi", "options": {"params": {"stop": ["\ud800"]}}}'.encode("utf-16", "surrogatepass"),
            400,
            "malformed_json",
            "in the string at options.params.stop[0]",
        ),
        (
            b'{"input": "hi", "options": {"params": {"temperature": 1e999}}}',
            400,
            "malformed_json",
            "1e999 is beyond the range",
        ),
        (
            b'{"input": "hi", "options": {"params": {"temperature": NaN}}}',
            400,
            "malformed_json",
            "NaN is not a JSON number",
        ),
        (
            b'{"input": "hi", "options": {"max_duration": Infinity}}',
            400,
            "malformed_json",
            "Infinity is not a JSON number",
        ),
    ],
)
def test_bad_run_requests(http: httpx.Client, content: bytes, status: int, code: str, mentions: str) -> None:
    before = http.get("/api/v1/agent/runs").json()["total"]
    response = http.post("/api/v1/agent/run", content=content, headers={"content-type": "application/json"})
    assert_problem(response, status, code, mentions)
    assert http.get("/api/v1/agent/runs").json()["total"] == before


def test_a_10_mb_body_is_refused_and_the_server_keeps_serving(http: httpx.Client) -> None:
    body = b'{"input": "' + b"a" * 10_000_000 + b'"}'
    assert_problem(http.post("/api/v1/agent/run", content=body), 413, "body_too_large", "limit")

    def chunks() -> object:
        for _ in range(20):
            yield b"a" * 100_000

    chunked = http.post("/api/v1/agent/run", content=chunks(), headers={"content-type": "application/json"})  # type: ignore[arg-type]
    assert_problem(chunked, 413, "body_too_large")
    assert http.get("/health/live").status_code == 200
    assert (
        http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"}).json()["status"] == "completed"
    )


def test_wrong_media_type(http: httpx.Client) -> None:
    response = http.post(
        "/api/v1/agent/run",
        content=b"input=hi",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported_media_type", "application/json")


def test_unknown_routes_and_methods(http: httpx.Client) -> None:
    assert_problem(http.get("/api/v1/nothing-here"), 404, "not_found", "/api/v1/nothing-here")
    assert_problem(http.put("/api/v1/agent/run"), 405, "method_not_allowed", "PUT")
    assert_problem(http.get("/api/v1/agent/status/nope"), 404, "run_not_found", "'nope'")
    assert_problem(http.get("/api/v1/agent/runs/nope/events"), 404, "run_not_found")
    assert_problem(
        http.get("/api/v1/agent/runs/x/events", headers={"Last-Event-ID": "abc"}), 404, "run_not_found"
    )


def test_a_bad_last_event_id_is_refused(http: httpx.Client) -> None:
    run_id = http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"}).json()["run_id"]
    response = http.get(f"/api/v1/agent/runs/{run_id}/events", headers={"Last-Event-ID": "abc"})
    assert_problem(response, 422, "invalid_request", "Last-Event-ID")
    assert_problem(
        http.get(f"/api/v1/agent/runs/{run_id}/events", params={"after": -1}), 422, "invalid_request", "after"
    )


def test_batch_limits(http: httpx.Client) -> None:
    assert_problem(http.post("/api/v1/agent/batch", json={"inputs": []}), 422, "invalid_request", "inputs")
    too_many = {"inputs": ["x"] * 501}
    assert_problem(http.post("/api/v1/agent/batch", json=too_many), 422, "batch_too_large", "500")
    assert_problem(
        http.post("/api/v1/agent/batch", json={"inputs": ["x"], "parallel": 1000}), 422, "invalid_parallel"
    )


def test_numbers_beyond_any_log_are_refused_not_crashed(http: httpx.Client) -> None:
    assert_problem(
        http.get("/api/v1/agent/runs", params={"offset": 10**25}), 422, "invalid_request", "offset"
    )
    run_id = http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"}).json()["run_id"]
    huge = http.get(f"/api/v1/agent/runs/{run_id}/events", headers={"Last-Event-ID": "9" * 30})
    assert_problem(huge, 422, "invalid_request", "Last-Event-ID")


def test_unicode_outside_the_bmp_escaped_as_a_pair_is_text(http: httpx.Client) -> None:
    """The control for the refusals above: a surrogate *pair* is one character, and runs."""
    done = http.post(
        "/api/v1/agent/run",
        content=b'{"input": "smile \\ud83d\\ude00", "mode": "chat"}',
        headers={"content-type": "application/json"},
    )
    assert done.status_code == 200, done.text
    status = http.get(f"/api/v1/agent/status/{done.json()['run_id']}").json()
    assert status["status"] == "completed" and status["input"] == "smile \U0001f600", status


def test_text_no_store_can_keep_is_refused_before_a_conversation_changes(http: httpx.Client) -> None:
    json_headers = {"content-type": "application/json"}
    created = http.post(
        "/api/v1/conversations", content=b'{"title": "t", "metadata": {"k": "\\ud800"}}', headers=json_headers
    )
    assert_problem(created, 400, "malformed_json", "metadata.k")
    conversation = http.post("/api/v1/conversations", json={"title": "kept"}).json()["id"]
    refused = http.post(
        f"/api/v1/conversations/{conversation}/messages",
        content=b'{"input": "\\udfff"}',
        headers=json_headers,
    )
    assert_problem(refused, 400, "malformed_json", "the string at input")
    assert http.get(f"/api/v1/conversations/{conversation}/history").json()["messages"] == []
    answered = http.post(f"/api/v1/conversations/{conversation}/messages", json={"input": "hi"})
    assert answered.status_code == 200 and answered.json()["status"] == "completed", answered.text


def test_config_and_profiles_refuse_what_no_file_or_run_could_keep(http: httpx.Client) -> None:
    """A configuration change is written to a file and applied to every later run: one holding a
    non-finite number or a lone surrogate, in any encoding, must be refused before either."""
    json_headers = {"content-type": "application/json"}
    before = http.get("/api/v1/config").json()
    profiles = {p["name"] for p in http.get("/api/v1/config/profiles").json()}
    for body, says in (
        (b'{"retry": {"max_delay": 1e999}}', "1e999 is beyond the range"),
        ('{"retry": {"max_delay": 2, "x": "\ud800"}}'.encode("utf-16-le", "surrogatepass"), "retry.x"),
    ):
        assert_problem(
            http.put("/api/v1/config", content=body, headers=json_headers), 400, "malformed_json", says
        )
    for body, says in (
        (b'{"name": "inf", "chain": [{"provider": "s"}], "params": {"temperature": -1e400}}', "-1e400"),
        (
            '{"name": "odd", "chain": [{"provider": "s"}], "params": {"stop": ["\udc00"]}}'.encode(
                "utf-32", "surrogatepass"
            ),
            "params.stop[0]",
        ),
    ):
        refused = http.post("/api/v1/config/profiles", content=body, headers=json_headers)
        assert_problem(refused, 400, "malformed_json", says)
    assert http.get("/api/v1/config").json() == before
    assert {p["name"] for p in http.get("/api/v1/config/profiles").json()} == profiles
    assert (
        http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"}).json()["status"] == "completed"
    )
