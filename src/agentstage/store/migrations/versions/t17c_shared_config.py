"""Shared configuration: the configuration changes made over the network (profiles, providers,
MCP registrations…), merged into one document that every API process and worker of a scale-out
deployment applies on top of its own layers, so a change made through one node reaches them all
without a restart. One row; ``revision`` grows with each change.

Revision ID: t17c
Revises: r9a
"""

import sqlalchemy as sa
from alembic import op

revision = "t17c"
down_revision = "r9a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shared_config",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shared_config")
