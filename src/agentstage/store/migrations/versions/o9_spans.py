"""Spans: every finished span of a run's trace (and of the requests around it), kept in the store.

Revision ID: o9a
Revises: x16a
"""

import sqlalchemy as sa
from alembic import op

revision = "o9a"
down_revision = "x16a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("parent_span_id", sa.String(16)),
        sa.Column("run_id", sa.String(36)),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
    )
    op.create_index("ix_spans_run", "spans", ["run_id", "start_ns"])


def downgrade() -> None:
    op.drop_index("ix_spans_run", "spans")
    op.drop_table("spans")
