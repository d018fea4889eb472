"""Token buckets shared by every process that serves the same store (per key, tenant, address).

Revision ID: s16c
Revises: s16b
"""

import sqlalchemy as sa
from alembic import op

revision = "s16c"
down_revision = "s16b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("identity", sa.String(200), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
