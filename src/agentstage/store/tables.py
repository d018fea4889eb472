"""The database schema, in SQLAlchemy Core. Alembic migrations create it; this mirrors them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("input", Text, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("resolved_mode", String(16)),
    Column("profile", String(64), nullable=False),
    Column("options", JSON, nullable=False),
    Column("conversation_id", String(36)),
    Column("correlation_id", String(128)),
    Column("output", Text),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("usage", JSON, nullable=False),
    Column("cost", Float, nullable=False, default=0.0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("last_seq", Integer, nullable=False, default=0),
    Column("worker_id", String(160)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("trace_id", String(32)),
    Column("snapshot_hash", String(64)),
    Column("metrics", JSON, nullable=False, default=dict),
    Column("tenant", String(64), nullable=False, default="default"),
    Column("attempt", Integer, nullable=False, default=1),
    Column("replay_of", String(36)),
    Index("ix_runs_status_created", "status", "created_at"),
    Index("ix_runs_created", "created_at"),
    Index("ix_runs_tenant_created", "tenant", "created_at"),
    Index("ix_runs_conversation", "conversation_id"),
    Index("ix_runs_tenant_status", "tenant", "status"),
    Index("ix_runs_replay_of", "replay_of"),
)

run_events = Table(
    "run_events",
    metadata,
    Column("run_id", String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(32), nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("data", JSON, nullable=False),
    Column("trace_id", String(32)),
    Column("span_id", String(16)),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("title", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("message_count", Integer, nullable=False, default=0),
    Column("tenant", String(64), nullable=False, default="default"),
    Index("ix_conversations_tenant", "tenant", "updated_at"),
)

conversation_messages = Table(
    "conversation_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(36), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("run_id", String(36)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("conversation_id", "position", name="uq_message_position"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("requests_per_minute", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("role", String(64), nullable=False, default="operator"),
    Column("tenant", String(64), nullable=False, default="default"),
    Column("scopes", JSON),
    Column("expires_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Column("rotated_at", DateTime(timezone=True)),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("items", JSON, nullable=False),
    Column("tenant", String(64), nullable=False, default="default"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("schema_version", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

store_probe = Table(
    "store_probe",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("principal", String(200), nullable=False),
    Column("tenant", String(64)),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status", Integer),
    Column("client", String(64)),
    Column("user_agent", Text),
    Column("request_id", String(128)),
    Column("details", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_ts", "ts"),
    Index("ix_audit_principal", "principal"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("identity", String(200), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

encryption_keys = Table(
    "encryption_keys",
    metadata,
    Column("key_id", String(16), primary_key=True),
    Column("added_at", DateTime(timezone=True), nullable=False),
)

# Spans (observability): a run's trace and the requests around it, kept for `agent trace show`.
spans = Table(
    "spans",
    metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_span_id", String(16)),
    Column("run_id", String(36)),
    Column("name", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),
    Column("status_message", Text),
    Column("attributes", JSON, nullable=False),
    Column("events", JSON, nullable=False),
    Index("ix_spans_run", "run_id", "start_ns"),
)

# How each tool call's time split between validation and work (the run's events do not say):
# with the run's events, what its tool.validate and tool.run spans are made of.
tool_timings = Table(
    "tool_timings",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("call_id", Text, primary_key=True),
    Column("validate_start_ns", BigInteger, nullable=False),
    Column("validate_end_ns", BigInteger, nullable=False),
    Column("run_start_ns", BigInteger, nullable=False),
    Column("run_end_ns", BigInteger, nullable=False),
    Column("failed", Boolean, nullable=False),
)

# Admissions of runs to a tenant limited in `reject` mode: a slot taken in the same transaction
# that counts the tenant's runs, before the run itself is stored (see store/leases.py).
run_admissions = Table(
    "run_admissions",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_run_admissions_tenant", "tenant", "created_at"),
)

# The configuration changes made over the network in a scale-out deployment, merged into one
# document every process applies on top of its own layers (distributed/shared_config.py).
shared_config = Table(
    "shared_config",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("document", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
