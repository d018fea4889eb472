"""Tool timings: how long each tool call's validation and work took (measured by the tool's
wrapper, which the run's events do not hold). A run's spans are derived from its stored events
when its trace is read, these rows giving the ``tool.validate`` and ``tool.run`` spans; the
``spans`` table keeps the spans events cannot give (the doors' server spans).

Revision ID: r9a
Revises: q17b
"""

import sqlalchemy as sa
from alembic import op

revision = "r9a"
down_revision = "q17b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_timings",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("call_id", sa.Text, primary_key=True),
        sa.Column("validate_start_ns", sa.BigInteger, nullable=False),
        sa.Column("validate_end_ns", sa.BigInteger, nullable=False),
        sa.Column("run_start_ns", sa.BigInteger, nullable=False),
        sa.Column("run_end_ns", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tool_timings")
