"""The ``logging``, ``tracing`` and ``metrics`` sections of the settings.

Standard OpenTelemetry variables work as everywhere else (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED``); the settings here are the defaults they
override, so a deployment can be pointed at a collector without touching its config files.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LogLevel = Literal["trace", "debug", "info", "warn", "error", "fatal"]
_ALIASES = {"warning": "warn", "critical": "fatal"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoggingSettings(_Section):
    level: LogLevel = Field(
        default="info",
        description="trace, debug, info, warn, error or fatal (also AGENT_LOG_LEVEL).",
    )
    format: Literal["json", "console"] = Field(
        default="json",
        description="json: one object per line (servers); console: one readable line (also AGENT_LOG_FORMAT).",
    )
    queue_size: int = Field(
        default=10_000,
        ge=100,
        description="Log lines waiting to be written; beyond it they are dropped (counted).",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _level_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return _ALIASES.get(lowered, lowered)
        return value


class TracingSettings(_Section):
    enabled: bool = Field(
        default=True, description="Trace every run (a span tree, read back from the store)."
    )
    store: bool = Field(
        default=True,
        description="Keep what traces are read from in the store (agent trace show): tool timings and request "
        "spans; a run's own spans are derived from its stored events.",
    )
    capture_content: bool = Field(
        default=False,
        description="Put messages, tool arguments and results on spans (masked). Off: only sizes and ids.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="Export spans (and metrics) over OTLP to this collector; OTEL_EXPORTER_OTLP_ENDPOINT "
        "and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT take precedence.",
    )
    otlp_protocol: Literal["grpc", "http/protobuf"] = Field(
        default="http/protobuf", description="OTLP transport (OTEL_EXPORTER_OTLP_PROTOCOL takes precedence)."
    )
    service_name: str = Field(default="agentstage", description="service.name (OTEL_SERVICE_NAME wins).")
    max_attribute_chars: int = Field(
        default=4096, ge=64, description="Longest string kept in a span attribute (longer ones are cut)."
    )


class MetricsSettings(_Section):
    enabled: bool = Field(default=True, description="Count runs, tokens, tools and errors for /metrics.")
    public: bool = Field(
        default=False,
        description="Serve /metrics without a credential. Off: scrapers need a key with metrics.read.",
    )
    otlp_interval: float = Field(
        default=30.0, gt=0, description="Seconds between OTLP metric exports (when OTLP is configured)."
    )
