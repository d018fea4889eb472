"""API keys become principals: a role, a tenant, optional scopes, an expiry and when last used.

Revision ID: s16a
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "s16a"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("role", sa.String(64), nullable=False, server_default="operator"))
        table.add_column(sa.Column("tenant", sa.String(64), nullable=False, server_default="default"))
        table.add_column(sa.Column("scopes", sa.JSON))
        table.add_column(sa.Column("expires_at", sa.DateTime(timezone=True)))
        table.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True)))
        table.add_column(sa.Column("rotated_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        for column in ("rotated_at", "last_used_at", "expires_at", "scopes", "tenant", "role"):
            table.drop_column(column)
