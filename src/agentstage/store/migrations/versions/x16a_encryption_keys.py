"""The ids of the keys the store's encrypted values may be sealed with (no key material).

Revision ID: x16a
Revises: s16d
"""

import sqlalchemy as sa
from alembic import op

revision = "x16a"
down_revision = "s16d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "encryption_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("encryption_keys")
