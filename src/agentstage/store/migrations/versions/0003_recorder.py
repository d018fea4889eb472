"""Configuration snapshots stored once by hash; run metrics; message positions from a counter;
a probe row that proves the store is writable.

Revision ID: 0003
Revises: 0002
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "store_probe",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    _move_run_snapshots()
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("metrics", sa.JSON, nullable=False, server_default="{}"))
        runs.drop_column("snapshot")
    with op.batch_alter_table("conversations") as conversations:
        conversations.add_column(sa.Column("message_count", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "UPDATE conversations SET message_count = (SELECT COALESCE(MAX(position) + 1, 0) "
        "FROM conversation_messages WHERE conversation_messages.conversation_id = conversations.id)"
    )


def _move_run_snapshots() -> None:
    """Each stored run snapshot becomes a row of ``snapshots`` under the hash the run already names."""
    rows = op.get_bind().execute(
        sa.text(
            "SELECT snapshot_hash, snapshot FROM runs "
            "WHERE snapshot IS NOT NULL AND snapshot_hash IS NOT NULL"
        )
    )
    documents: dict[str, dict[str, object]] = {}
    for digest, body in rows:
        documents.setdefault(digest, json.loads(body) if isinstance(body, str) else body)
    if not documents:
        return
    table = sa.table(
        "snapshots",
        sa.column("hash", sa.String),
        sa.column("schema_version", sa.Integer),
        sa.column("body", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        table,
        [
            {
                "hash": digest,
                "schema_version": int(str(doc.get("schema_version", 1))),
                "body": doc,
                "created_at": now,
            }
            for digest, doc in documents.items()
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as conversations:
        conversations.drop_column("message_count")
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("snapshot", sa.JSON))
        runs.drop_column("metrics")
    op.drop_table("store_probe")
    op.drop_table("snapshots")
