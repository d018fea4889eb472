"""A run may replay or re-run another one: ``runs.replay_of`` names it.

Revision ID: n10
Revises: o9a
"""

import sqlalchemy as sa
from alembic import op

revision = "n10"
down_revision = "o9a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("replay_of", sa.String(36)))
    op.create_index("ix_runs_replay_of", "runs", ["replay_of"])


def downgrade() -> None:
    op.drop_index("ix_runs_replay_of", "runs")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("replay_of")
