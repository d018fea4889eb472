"""A model's answer or an error message may hold a NUL character (U+0000). PostgreSQL's text
columns cannot; the run must still be recorded exactly, on every store, with nothing replaced."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agentstage.runtime.conversations import ConversationService
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService
from agentstage.store.crypto import Keyring

pytestmark = pytest.mark.anyio

ANSWER = "before\x00after \x00\x00 and \x01 too"


async def test_an_answer_with_nul_is_kept_exactly(make_service: Callable[..., RunService]) -> None:
    async with make_service({"responses": [{"text": ANSWER}]}) as service:
        conversations = ConversationService(service)
        conversation = await conversations.create()
        run = await conversations.send(conversation.id, "say it", mode="chat")
        ended = await service.wait(run.id)
        stored = await service.status(run.id)
        history = await conversations.history(conversation.id)
        events = await service.events(run.id)
    assert ended.status.value == "completed", ended.error_message
    assert stored.output == ANSWER
    assert [m.content for m in history] == ["say it", ANSWER]
    assert events[-1].data["output"] == ANSWER


async def test_an_error_message_with_nul_is_kept_exactly(make_service: Callable[..., RunService]) -> None:
    message = "the upstream said \x00 nothing"
    script = {"responses": [{"error": {"code": "model_error", "message": message, "retryable": False}}]}
    async with make_service(script) as service:
        ended = await service.run(RunRequest(input="hello", mode="chat"))
        stored = await service.status(ended.id)
    assert stored.status.value == "failed"
    assert stored.error_message is not None and message in stored.error_message


async def test_search_finds_text_around_a_nul(make_service: Callable[..., RunService]) -> None:
    async with make_service({"responses": [{"text": ANSWER}]}) as service:
        ended = await service.run(RunRequest(input="find me", mode="chat"))
        found = await service.list_runs(query="after")
    assert ended.id in [record.id for record in found]


async def test_a_search_for_text_with_nul_finds_it(make_service: Callable[..., RunService]) -> None:
    script = {"rules": [{"match": "one", "text": ANSWER}, {"match": "two", "text": "before AFTER"}]}
    async with make_service(script) as service:
        ended = await service.run(RunRequest(input="one", mode="chat"))
        other = await service.run(RunRequest(input="two", mode="chat"))
        found = [record.id for record in await service.list_runs(query="before\x00AFTER")]
    assert found == [ended.id] and other.id not in found


@pytest.mark.parametrize(
    "text", ["\x00", "a\x00b", "\x01e\x00", "\x01e plain", "\x01\x010", "x\x01\x00y\x010", "\x01v1:\x00"]
)
def test_every_text_comes_back_as_it_went_in(text: str) -> None:
    """The escaped form never holds NUL, and a value that looks escaped (or sealed) is still read
    back as the text it was."""
    for keys in (Keyring(), Keyring(b"k" * 32)):
        stored = keys.put_text(text, "runs.output", "r1")
        assert "\x00" not in stored
        assert keys.get_text(stored, "runs.output", "r1") == text
