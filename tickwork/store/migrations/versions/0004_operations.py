"""Operating schedules over time: jobs.tags, jobs.max_concurrency, events, trigger_keys

Revision ID: 0004
Revises: 0002 (0003 once issue 13's migration is merged)
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from tickwork.store.models import BigId, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("tags", sa.JSON))
        batch.add_column(sa.Column("max_concurrency", sa.Integer))
    op.create_table(
        "events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("job_id", BigId),
        sa.Column("run_id", BigId),
        sa.Column("details", sa.JSON),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_job_id_id", "events", ["job_id", "id"])
    op.create_index("ix_events_kind_id", "events", ["kind", "id"])
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_table(
        "trigger_keys",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("run_id", BigId, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "key", name="uq_trigger_keys_job_key"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        sqlite_autoincrement=True,
    )
    op.create_index("ix_trigger_keys_created_at", "trigger_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("trigger_keys")
    op.drop_table("events")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("max_concurrency")
        batch.drop_column("tags")
