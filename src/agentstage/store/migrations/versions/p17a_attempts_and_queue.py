"""Runs carry their attempt number (every write is fenced by it); PostgreSQL gets the job queue.

The queue's tables and functions are procrastinate's own schema for the pinned version, applied
here so one Alembic chain owns the whole database. SQLite (the embedded mode) has no queue.

Revision ID: p17a
Revises: n10
"""

import sqlalchemy as sa
from alembic import op

revision = "p17a"
down_revision = "n10"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as table:
        table.add_column(sa.Column("attempt", sa.Integer, nullable=False, server_default="1"))
    op.create_index("ix_runs_tenant_status", "runs", ["tenant", "status"])
    if op.get_bind().dialect.name == "postgresql":
        from procrastinate.schema import SchemaManager

        op.get_bind().exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in ("procrastinate_events", "procrastinate_periodic_defers", "procrastinate_jobs",
                     "procrastinate_workers"):  # fmt: skip
            op.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
    op.drop_index("ix_runs_tenant_status", "runs")
    with op.batch_alter_table("runs") as table:
        table.drop_column("attempt")
