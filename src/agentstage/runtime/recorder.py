"""The one owner of a run's writes: its seq numbers, its record, its conversation turn and its end.

Nothing else writes for a run. Events get their place in the log here (``seq`` 1, 2, 3 … with no
gaps), are serialised once, capped in size (the cut is marked in the event), and handed to the
writer. When the store loses some of the run's writes, the recorder rewinds to the last durable
seq, so the ending it writes next follows the durable log without a gap.

Secrets are masked here (the one masker, :mod:`agentstage.observability.masking`), before an event
or a record field goes anywhere: the store, a live stream, a sink, the model. A secret pasted into
an input is therefore never stored, streamed, logged or traced.
"""

from __future__ import annotations

from typing import Any

from agentstage.core.events import (
    EventDraft,
    RunEvent,
    RunQueued,
    TerminalPayload,
    parse_payload,
    payload_json_parts,
    utc_now,
)
from agentstage.core.jsonsafe import shrink_to_fit
from agentstage.core.records import RunRecord
from agentstage.errors import RunError, StoreError
from agentstage.observability.masking import redact, redact_repeated
from agentstage.runtime.writer import EventWriter
from agentstage.store.base import ConversationTurn
from agentstage.types import RunStatus

_TEXT_FIELDS = ("input", "output", "error_message")

_STATUS = {
    "run.completed": RunStatus.COMPLETED,
    "run.failed": RunStatus.FAILED,
    "run.cancelled": RunStatus.CANCELLED,
}


class RunRecorder:
    def __init__(
        self,
        record: RunRecord,
        writer: EventWriter,
        *,
        max_event_bytes: int = 1 << 20,
        next_seq: int = 1,
        fence: int | None = None,
    ):
        """``next_seq``/``fence``: a run claimed from the queue continues its log after what is
        stored, and every write it makes is fenced by its attempt (refused once the run moved on)."""
        self.record = record
        self._writer = writer
        self._max_event_bytes = max_event_bytes
        self._next_seq = next_seq
        self._durable_seq = next_seq - 1
        self.fence = fence
        if fence is not None:
            writer.fence(record.id, fence)
        self._losses = 0
        self.terminal: RunEvent | None = None
        self.lost: StoreError | None = None

    @property
    def run_id(self) -> str:
        return self.record.id

    @property
    def finished(self) -> bool:
        return self.terminal is not None

    # writing --------------------------------------------------------------------------------------

    def begin(self, queued: RunQueued) -> RunEvent:
        """The run's first writes: its record, as ``queued``, and the ``run.queued`` event."""
        self.record.input = redact(self.record.input)
        self._writer.add_run(self.record.model_copy())
        return self._append(EventDraft(queued))

    def emit(self, draft: EventDraft) -> RunEvent | None:
        """Append an event; after the run's end (or the loss of its writes) late events are dropped."""
        if self.terminal is not None or self.lost is not None:
            return None
        return self._append(draft)

    def update(self, **fields: Any) -> None:
        """Change the stored record (status, timings, …) along with the next commit."""
        if self.terminal is not None:
            return
        _masked(fields)
        for name, value in fields.items():
            setattr(self.record, name, value)
        self._writer.update(self.run_id, **fields)

    def keep_snapshot(self, digest: str, body: dict[str, Any]) -> None:
        self._writer.add_snapshot(self.run_id, digest, body)

    def add_turn(self, conversation_id: str, messages: list[tuple[str, str]]) -> None:
        """Messages for the conversation, numbered by the store when the run's end is written."""
        if self.terminal is None:
            masked = [(role, redact(content)) for role, content in messages]
            self._writer.add_turn(ConversationTurn(conversation_id, self.run_id, masked, utc_now()))

    def finish(self, payload: TerminalPayload, **fields: Any) -> RunEvent | None:
        """Write the run's end: the terminal event and the final record, in one commit.
        Only the first ending counts (unless the store lost it; then the next one is written)."""
        if self.terminal is not None:
            return None
        record = self.record
        fields.update(
            status=_STATUS[payload.type],
            finished_at=utc_now(),
            usage=record.usage,
            cost=record.cost,
            metrics=record.metrics,
        )
        _masked(fields)
        for name, value in fields.items():
            setattr(record, name, value)
        self.lost = None
        self.terminal = self._append(EventDraft(payload))
        self._writer.update(self.run_id, last_seq=self.terminal.seq, **fields)
        return self.terminal

    async def durable(self) -> None:
        """Wait until everything handed over so far is committed; raise the store's error if some
        of it was lost (the recorder has then rewound, ready for a new ending)."""
        losses = self._losses
        try:
            await self._writer.flush(self.run_id)
        except StoreError:
            pass
        if self._losses != losses and self.lost is not None:
            raise self.lost

    def _append(self, draft: EventDraft) -> RunEvent:
        payload = draft.payload
        try:
            parts = payload_json_parts(payload)
        except (ValueError, TypeError) as error:
            raise RunError(
                f"a {payload.type} event of this run cannot be recorded as JSON: {error}",
                code="event_invalid",
            ) from None
        masked = False
        for index, part in enumerate(parts):  # piece by piece: repeated pieces are scanned once
            clean = redact_repeated(part)
            if clean != part:
                parts[index], masked = clean, True
        text = "".join(parts)
        event = RunEvent(
            self.run_id, self._next_seq, utc_now(),
            None if masked else payload,  # masked: readers parse the masked text, never the secret
            type=payload.type, data_json=text, trace_id=self.record.trace_id, span_id=draft.span_id,
        )  # fmt: skip
        if len(text) * 4 > self._max_event_bytes and len(text.encode()) > self._max_event_bytes:
            event = self._capped(event)
        self._next_seq += 1
        self.record.last_seq = event.seq
        self._writer.add_event(event)
        return event

    def _capped(self, event: RunEvent) -> RunEvent:
        smaller = shrink_to_fit(event.data, self._max_event_bytes)
        if smaller is None:
            raise RunError(
                f"a {event.type} event of this run is larger than the limit of "
                f"{self._max_event_bytes:,} bytes and cannot be shortened",
                code="event_too_large",
            )
        return RunEvent(
            event.run_id,
            event.seq,
            event.ts,
            parse_payload(event.type, smaller),
            trace_id=event.trace_id,
            span_id=event.span_id,
        )

    # what the writer reports ----------------------------------------------------------------------

    def committed(self, last_seq: int) -> None:
        self._durable_seq = last_seq

    def lose(self, error: StoreError) -> None:
        """The store could not keep some of this run's writes: rewind to the durable log."""
        self.lost = error
        self._losses += 1
        self.terminal = None
        self._next_seq = self._durable_seq + 1
        self.record.last_seq = self._durable_seq
        if self.record.status.terminal:
            self.record.status = RunStatus.RUNNING if self.record.started_at else RunStatus.QUEUED


def _masked(fields: dict[str, Any]) -> None:
    for name in _TEXT_FIELDS:
        value = fields.get(name)
        if isinstance(value, str):
            fields[name] = redact(value)
