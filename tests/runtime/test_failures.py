"""Bad model behaviour and limits: recorded as failed steps or failed runs, the store consistent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService

pytestmark = pytest.mark.anyio


def two_providers(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    return {
        "providers": {
            "a": {"type": "scripted", "script": first},
            "b": {"type": "scripted", "script": second},
        },
        "profiles": {"chain": {"chain": [{"provider": "a"}, {"provider": "b"}]}},
        "default_profile": "chain",
    }


async def run_and_log(service: RunService, **fields: Any) -> tuple[Any, list[Any]]:
    final = await service.run(RunRequest.model_validate(fields))
    events = await service.events(final.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert final.last_seq == events[-1].seq
    return final, events


async def test_an_invalid_action_is_a_failed_step_fed_back_to_the_model(
    make_service: Callable[..., RunService],
) -> None:
    script = {
        "native_tools": False,
        "responses": [{"text": "I think the answer is 4"}, {"json": {"answer": "4"}}],
    }
    async with make_service(script) as service:
        final, events = await run_and_log(service, input="what is 2+2?", mode="react")
    failed = [e for e in events if e.type == "step.finished" and e.data["status"] == "failed"]
    assert len(failed) == 1 and failed[0].data["error"]["code"] == "invalid_action"
    second_request = [e for e in events if e.type == "model.request"][1]
    assert "not a valid action" in second_request.data["messages"][-1]["content"]
    assert final.status == "completed" and final.output == "4"


async def test_a_tool_argument_of_the_wrong_type_is_a_tool_error(
    make_service: Callable[..., RunService],
) -> None:
    script = {
        "responses": [
            {"tool_calls": [{"name": "math.calculate", "arguments": {"expression": 5}}]},
            {"text": "Sorry, I passed a number."},
        ]
    }
    async with make_service(script) as service:
        final, events = await run_and_log(service, input="calculate", mode="react")
    result = next(e for e in events if e.type == "tool.result")
    assert result.data["error"]["code"] == "invalid_tool_arguments"
    assert "expression" in result.data["error"]["message"]
    observation = [e for e in events if e.type == "model.request"][1].data["messages"][-1]
    assert observation["role"] == "tool" and "invalid_tool_arguments" in observation["content"]
    # Its only tool call failed: whatever the model says next, the run did not succeed.
    assert final.status == "failed" and final.error_code == "tool_steps_failed"
    assert final.error_message is not None and "math.calculate" in final.error_message


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM orders",
        "INSERT INTO products (name, category, unit_price) VALUES ('x', 'y', 1)",
        "ATTACH DATABASE '/tmp/elsewhere.db' AS other",
        "CREATE TABLE t (x)",
    ],
)
async def test_sql_that_tries_to_write_is_refused(
    make_service: Callable[..., RunService], query: str
) -> None:
    script = {
        "responses": [{"tool_calls": [{"name": "sql.query", "arguments": {"query": query}}]}, {"text": "ok"}]
    }
    async with make_service(script) as service:
        _, events = await run_and_log(service, input="change the data", mode="react")
        rows = await service.catalog.execute("sql.query", {"query": "SELECT count(*) AS n FROM orders"})
    result = next(e for e in events if e.type == "tool.result")
    assert result.data["error"]["code"] in {"sql_not_read_only", "sql_error"}
    assert rows.output["rows"] == [[600]]


async def test_a_model_that_times_out_is_retried_then_fails_with_its_code(
    make_service: Callable[..., RunService],
) -> None:
    script = {"responses": [{"text": "too late", "delay": 5}]}
    async with make_service(script, retry={"timeout": 0.2, "max_attempts": 2}) as service:
        final, events = await run_and_log(service, input="hi", mode="chat")
    retries = [e for e in events if e.type == "model.retry"]
    assert len(retries) == 1 and retries[0].data["error"]["code"] == "model_timeout"
    assert final.status == "failed" and final.error_code == "model_timeout"
    assert events[-1].type == "run.failed" and events[-1].data["error"]["code"] == "model_timeout"


async def test_retryable_errors_honour_retry_after(make_service: Callable[..., RunService]) -> None:
    script = {
        "responses": [
            {
                "error": {
                    "code": "rate_limited",
                    "message": "slow down",
                    "retryable": True,
                    "retry_after": 0.05,
                }
            },
            {"text": "Finally."},
        ]
    }
    async with make_service(script) as service:
        final, events = await run_and_log(service, input="hi", mode="chat")
    retry = next(e for e in events if e.type == "model.retry")
    assert retry.data["delay"] == 0.05 and retry.data["attempt"] == 1
    assert final.status == "completed" and final.output == "Finally."


async def test_a_provider_that_is_down_falls_back(home: Any) -> None:
    from agentstage.runtime.wiring import build_service
    from conftest import make_settings

    down = {
        "responses": [
            {"error": {"code": "provider_unavailable", "message": "connection refused", "retryable": False}}
        ]
    }
    config = two_providers(down, {"responses": [{"text": "From the fallback."}]})
    async with build_service(make_settings(home, config)) as service:
        final, events = await run_and_log(service, input="hi", mode="chat")
    fallback = next(e for e in events if e.type == "model.fallback")
    assert fallback.data["from_provider"] == "a" and fallback.data["to_provider"] == "b"
    assert fallback.data["reason"]["code"] == "provider_unavailable"
    response = next(e for e in events if e.type == "model.response")
    assert response.data["provider"] == "b"
    assert final.status == "completed" and final.output == "From the fallback."


async def test_a_provider_that_is_down_without_fallback_names_itself(
    make_service: Callable[..., RunService],
) -> None:
    down = {"responses": [{"error": {"code": "provider_unavailable", "message": "connection refused"}}]}
    async with make_service(down) as service:
        final, _ = await run_and_log(service, input="hi", mode="chat")
    assert final.status == "failed" and final.error_code == "provider_unavailable"
    assert (
        final.error_message is not None
        and "s:" in final.error_message
        and "connection refused" in final.error_message
    )


async def test_max_steps_ends_the_run_failed(make_service: Callable[..., RunService]) -> None:
    loop_forever = {  # a different call each time: nothing repeats, the steps just run out
        "responses": [
            {"tool_calls": [{"name": "math.calculate", "arguments": {"expression": f"1+{n}"}}]}
            for n in range(5)
        ]
    }
    async with make_service(loop_forever) as service:
        final, events = await run_and_log(service, input="loop", mode="react", options={"max_steps": 3})
    assert final.status == "failed" and final.error_code == "max_steps"
    assert len([e for e in events if e.type == "tool.result"]) == 3


async def test_max_tokens_ends_the_run_failed(make_service: Callable[..., RunService]) -> None:
    script = {"responses": [{"text": "big", "usage": {"input_tokens": 900, "output_tokens": 200}}]}
    async with make_service(script) as service:
        final, _ = await run_and_log(service, input="hi", mode="chat", options={"max_tokens": 1000})
    assert final.status == "failed" and final.error_code == "max_tokens"
    assert final.usage["total_tokens"] == 1100


async def test_max_duration_ends_the_run_failed(make_service: Callable[..., RunService]) -> None:
    script = {"responses": [{"deltas": ["a", "b", "c", "d"], "delta_delay": 0.3}]}
    async with make_service(script) as service:
        final, events = await asyncio.wait_for(
            run_and_log(service, input="hi", mode="chat", options={"max_duration": 0.5}), 10
        )
    assert final.status == "failed" and final.error_code == "max_duration"
    assert events[-1].data["error"]["code"] == "max_duration"


async def test_a_missing_api_key_fails_the_run_with_a_clear_error(home: Any) -> None:
    from agentstage.runtime.wiring import build_service
    from conftest import make_settings

    config = {
        "providers": {"remote": {"type": "openai", "api_key": "env:AGENTSTAGE_TEST_UNSET_KEY"}},
        "profiles": {"r": {"chain": [{"provider": "remote", "model": "gpt-4o-mini"}]}},
        "default_profile": "r",
    }
    async with build_service(make_settings(home, config)) as service:
        final, _ = await run_and_log(service, input="hi", mode="chat")
    assert final.status == "failed"
    assert final.error_message is not None and "AGENTSTAGE_TEST_UNSET_KEY" in final.error_message


async def test_the_circuit_breaker_opens_after_repeated_failures(
    make_service: Callable[..., RunService],
) -> None:
    down = {"responses": [{"error": {"code": "provider_unavailable", "message": "connection refused"}}]}
    async with make_service(
        down, retry={"max_attempts": 1, "breaker_threshold": 2, "breaker_reset": 60}
    ) as service:
        codes = [(await service.run(RunRequest(input="hi", mode="chat"))).error_code for _ in range(3)]
    assert codes == ["provider_unavailable", "provider_unavailable", "circuit_open"]


async def test_a_config_change_keeps_what_breakers_learned(
    home: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from agentstage.runtime.config_view import reconfigure
    from agentstage.runtime.wiring import build_service
    from agentstage.settings import load_settings

    down = {"responses": [{"error": {"code": "provider_unavailable", "message": "refused"}}]}
    config = two_providers(down, {"responses": [{"text": "From b."}]})
    config["retry"] = {"breaker_threshold": 1, "breaker_reset": 600, "max_attempts": 1}
    (home / "config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.setenv("AGENT_HOME", str(home))
    async with build_service(load_settings()) as service:
        first, _ = await run_and_log(service, input="hi", mode="chat")
        await reconfigure(service, {"pricing": {"b/scripted-model": {"input": 1.0, "output": 1.0}}})
        second, events = await run_and_log(service, input="hi", mode="chat")
    assert first.status == second.status == "completed"
    fallback = next(e for e in events if e.type == "model.fallback")
    assert fallback.data["reason"]["code"] == "circuit_open"  # still open after the change
    assert second.cost > 0  # and the change itself applied
