"""Admissions of runs to tenants limited in ``reject`` mode: one row per admitted run until its
own row is stored, so two API processes admitting runs at once count each other's.

Revision ID: q17b
Revises: p17a
"""

import sqlalchemy as sa
from alembic import op

revision = "q17b"
down_revision = "p17a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_admissions",
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_run_admissions_tenant", "run_admissions", ["tenant", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_run_admissions_tenant", "run_admissions")
    op.drop_table("run_admissions")
