"""Request and response bodies of the HTTP API; they are also its OpenAPI description."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentstage.runtime.requests import RunOptions, RunRequest


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunBody(Body):
    input: str = Field(description="The question or task for the agent.", examples=["What is 17 * 23?"])
    mode: str | None = Field(
        default=None, description="auto, chat, react or planner (default: the config's)."
    )
    profile: str | None = Field(default=None, description="Model profile (default: the config's).")
    options: RunOptions = Field(default_factory=RunOptions)
    conversation_id: str | None = None
    on_disconnect: Literal["continue", "cancel"] = Field(
        default="continue", description="What a streamed run does when its client goes away."
    )

    def to_request(self, correlation_id: str | None) -> RunRequest:
        return RunRequest(
            input=self.input,
            mode=self.mode,
            profile=self.profile,
            options=self.options,
            conversation_id=self.conversation_id,
            correlation_id=correlation_id,
        )


class Timings(BaseModel):
    created_at: str
    started_at: str | None
    finished_at: str | None
    queue_ms: float | None
    duration_ms: float | None


class ErrorBody(BaseModel):
    code: str
    message: str | None


class RunResult(BaseModel):
    """The shape ``agent run --output json`` prints."""

    run_id: str
    status: str
    output: str | None
    usage: dict[str, int]
    cost: float
    timings: Timings
    mode: str
    profile: str
    error: ErrorBody | None = None


class RunStatusBody(RunResult):
    last_seq: int
    input: str
    conversation_id: str | None


class RunList(BaseModel):
    runs: list[RunStatusBody]
    total: int
    limit: int
    offset: int


class CancelAccepted(BaseModel):
    run_id: str
    status: str
    cancel_requested: bool = True


class BatchBody(Body):
    inputs: list[str] = Field(min_length=1, description="One run per input, results in this order.")
    parallel: int = Field(default=4, ge=1, description="Runs of this batch executing at once.")
    mode: str | None = None
    profile: str | None = None
    options: RunOptions = Field(default_factory=RunOptions)


class BatchItem(BaseModel):
    index: int
    run_id: str | None
    error: dict[str, Any] | None = None


class BatchAccepted(BaseModel):
    batch_id: str
    run_ids: list[str | None]
    items: list[BatchItem]


class BatchProgress(BaseModel):
    batch_id: str
    created_at: str
    total: int
    finished: int
    done: bool
    counts: dict[str, int]
    results: list[dict[str, Any]]


class ConversationBody(Body):
    title: str = Field(default="", max_length=500)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Conversation(BaseModel):
    id: str
    title: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any]


class MessageBody(Body):
    input: str
    mode: str | None = None
    profile: str | None = None
    options: RunOptions = Field(default_factory=RunOptions)
    on_disconnect: Literal["continue", "cancel"] = "continue"


class HistoryMessage(BaseModel):
    position: int
    role: str
    content: str
    run_id: str | None
    created_at: str


class History(BaseModel):
    conversation_id: str
    messages: list[HistoryMessage]


class Tool(BaseModel):
    id: str
    name: str
    version: str
    category: str
    description: str
    parameters: dict[str, Any]
    schema_hash: str


class ToolExecuteBody(Body):
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResult(BaseModel):
    tool: str
    output: Any = None
    error: ErrorBody | None = None
    latency_ms: float


class ProfileBody(Body):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    chain: list[dict[str, Any]] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable ``code``."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str | None = None
    request_id: str | None = None
