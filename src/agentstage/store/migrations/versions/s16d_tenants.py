"""Every run, conversation and batch belongs to a tenant; reads and lists are scoped by it.

Revision ID: s16d
Revises: s16c
"""

import sqlalchemy as sa
from alembic import op

revision = "s16d"
down_revision = "s16c"
branch_labels = None
depends_on = None

TABLES = ("runs", "conversations", "batches")


def upgrade() -> None:
    for name in TABLES:
        with op.batch_alter_table(name) as table:
            table.add_column(sa.Column("tenant", sa.String(64), nullable=False, server_default="default"))
    op.create_index("ix_runs_tenant_created", "runs", ["tenant", "created_at"])
    op.create_index("ix_conversations_tenant", "conversations", ["tenant", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_conversations_tenant", "conversations")
    op.drop_index("ix_runs_tenant_created", "runs")
    for name in TABLES:
        with op.batch_alter_table(name) as table:
            table.drop_column("tenant")
