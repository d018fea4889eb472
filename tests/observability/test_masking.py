"""The one masker: credentials by shape anywhere in text, remembered secret values, JSON kept valid;
and log lines in both formats going through it."""

from __future__ import annotations

import io
import json
import logging
import secrets

import pytest

from agentstage.observability import logging as log_lines
from agentstage.observability import masking
from agentstage.observability.logging import (
    BoundedQueueHandler,
    ConsoleLines,
    JsonLines,
    configure_logging,
    stop_logging,
)
from agentstage.observability.masking import MASK, mask, redact, redact_json, remember_secrets
from agentstage.observability.metrics import exposition

SHAPED = [
    ("key sk-proj-abcdefghijklmnopqrstuvwxyz012345 here", "key *** here"),
    ("ags_" + "A1b2" * 11, MASK),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token ***"),
    ("id AKIAABCDEFGHIJKLMNOP", "id ***"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijklmnop", "jwt ***"),
    ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer ***"),
    ("authorization: basic dXNlcjpwYXNzd29yZA==", "authorization: basic ***"),
    ("postgresql://app:hunter22@db:5432/runs", "postgresql://app:***@db:5432/runs"),
    ("login with password=hunter22 now", "login with password=*** now"),
    ("OPENAI_API_KEY=abc123def456", "OPENAI_API_KEY=***"),
    ("DEPLOY_TOKEN: zzz999yyy", "DEPLOY_TOKEN: ***"),
    ("client_secret = s3cr3t-value", "client_secret = ***"),
]
KEPT = [
    "what is 6*7?",
    "max_tokens: 512 and input_tokens 40",
    "api_key: env:OPENAI_API_KEY",
    "the risk-free rate is 4%",
    "principal api_key:tests (the key's name, not the key)",
    '{"max_tokens":512,"temperature":0.2}',
]


@pytest.mark.parametrize(("text", "masked"), SHAPED)
def test_credentials_are_masked_by_their_shape_inside_text(text: str, masked: str) -> None:
    assert redact(text) == masked


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text and redact_json(text) is None


def test_remembered_values_are_masked_whatever_their_shape() -> None:
    secret, referenced, literal = (f"plain-{secrets.token_hex(6)}" for _ in range(3))
    environ = {
        "BILLING_SECRET": secret,
        "UPSTREAM": referenced,
        "PATH": "/usr/local/bin:/usr/bin",
        "MY_KEY": "abc",
    }
    config = {"providers": {"x": {"api_key": literal, "token": "env:UPSTREAM"}}, "home": "/srv/agentstage"}
    remember_secrets(environ, config)
    text = f"{secret} / {referenced} / {literal} / /usr/local/bin:/usr/bin / abc / /srv/agentstage"
    assert redact(text) == "*** / *** / *** / /usr/local/bin:/usr/bin / abc / /srv/agentstage"


def test_json_stays_valid_when_a_secret_needs_escaping() -> None:
    secret = f'quo"te-{secrets.token_hex(4)}\\x'
    masking.remember([secret])
    text = json.dumps({"input": f"use {secret} please", "n": 1})
    masked = redact_json(text)
    assert masked is not None and json.loads(masked) == {"input": "use *** please", "n": 1}


def test_structured_masking_hides_secret_named_keys_and_keeps_references() -> None:
    data = {"api_key": "anything", "options": {"password": "x1", "base_url": "https://u:p4ss@host/v1"},
            "token": "env:GH_TOKEN", "name": "ok"}  # fmt: skip
    assert mask(data) == {"api_key": MASK, "options": {"password": MASK, "base_url": "https://u:***@host/v1"},
                          "token": "env:GH_TOKEN", "name": "ok"}  # fmt: skip


def record(message: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("agentstage.test", level, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_lines_carry_context_levels_and_are_masked() -> None:
    line = json.loads(JsonLines().format(record("key sk-abcdefghijklmnopqrstuvwx leaked", logging.WARNING,
                                                run_id="r1", step_id="2", trace_id="t" * 32, span_id="s" * 16,
                                                correlation_id="c1", fields={"tool": "math.calculate"})))  # fmt: skip
    assert line["message"] == "key *** leaked" and line["level"] == "WARN"
    assert (line["run_id"], line["step_id"], line["correlation_id"], line["tool"]) == (
        "r1",
        "2",
        "c1",
        "math.calculate",
    )
    assert set(line) >= {"ts", "level", "logger", "message", "trace_id", "span_id"}
    assert json.loads(JsonLines().format(record("x", 5)))["level"] == "TRACE"
    assert json.loads(JsonLines().format(record("x", logging.CRITICAL)))["level"] == "FATAL"
    access = json.loads(JsonLines().format(record(json.dumps({"event": "http.request", "status": 200}))))
    assert (access["message"], access["status"]) == ("http.request", 200)


def test_console_lines_are_readable_and_masked() -> None:
    text = ConsoleLines().format(record("run started password=hunter22", run_id="r1"))
    assert "INFO  run started password=***" in text and "run_id=r1" in text


def test_a_full_log_queue_drops_lines_and_counts_them() -> None:
    handler = BoundedQueueHandler(capacity=2)
    for index in range(5):
        handler.handle(record(f"line {index}"))
    assert handler.dropped == 3 and len(handler.queue) == 2
    text = exposition()[0].decode()
    assert 'agent_observability_dropped_total{what="log_lines"}' in text


def test_configured_logging_writes_through_its_thread_at_the_level_asked() -> None:
    stream = io.StringIO()
    root = logging.getLogger("agentstage")
    before = (list(root.handlers), root.level, root.propagate, log_lines._listener)
    configure_logging("warn", "json", stream=stream)
    try:
        log = logging.getLogger("agentstage.test")
        log.info("not shown")
        log.warning("shown with Bearer abcdefghijkl")
    finally:
        stop_logging()
        root.handlers[:], root.level, root.propagate, log_lines._listener = before
        if log_lines._listener is not None:  # the process's own log writer, as it was
            log_lines._listener.start()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["shown with Bearer ***"]


def test_a_librarys_warnings_are_our_lines_and_its_chatter_is_not() -> None:
    stream = io.StringIO()
    root = logging.getLogger("agentstage")
    before = (list(root.handlers), root.level, root.propagate, log_lines._listener)
    configure_logging("info", "json", stream=stream)
    try:
        pool = logging.getLogger("psycopg.pool")
        pool.info("connection added")  # a library's own chatter stays out
        pool.warning("error connecting in 'pool-1': password Bearer abcdefghijkl")
    finally:
        stop_logging()
        root.handlers[:], root.level, root.propagate, log_lines._listener = before
        if log_lines._listener is not None:
            log_lines._listener.start()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [("psycopg.pool", "WARN")]
    assert lines[0]["message"] == "error connecting in 'pool-1': password Bearer ***"
    assert not any(isinstance(h, log_lines._Forward) for h in logging.getLogger().handlers)


def test_the_log_writer_writes_every_line_in_order_a_batch_at_a_time() -> None:
    class Counting(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

    stream = Counting()
    root = logging.getLogger("agentstage")
    before = (list(root.handlers), root.level, root.propagate, log_lines._listener)
    configure_logging("info", "json", stream=stream)
    try:
        log = logging.getLogger("agentstage.test")
        for index in range(500):
            log.info("line %d", index)
    finally:
        stop_logging()  # writes what is still queued
        root.handlers[:], root.level, root.propagate, log_lines._listener = before
        if log_lines._listener is not None:
            log_lines._listener.start()
    lines = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert lines == [f"line {index}" for index in range(500)]
    assert stream.writes < len(lines)  # lines that waited together went out in one write
