"""Alerts: late fires, auto-pause, health, the notifications outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql")


def _instant() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")


JOB_COLUMNS = (
    ("late_after_seconds", sa.Integer),
    ("pause_after_failures", sa.Integer),
    ("notify_url", lambda: sa.String(2048)),
    ("paused_reason", lambda: sa.String(200)),
    ("resumed_at", _instant),
    ("late_since", _instant),
    ("failing_since", _instant),
    ("late_fire_at", _instant),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name, kind in JOB_COLUMNS:
            batch.add_column(sa.Column(name, kind(), nullable=True))
    with op.batch_alter_table("job_runs") as batch:
        batch.add_column(sa.Column("late_at", _instant(), nullable=True))
    # Jobs paused before this revision were paused by hand.
    op.execute("UPDATE jobs SET paused_reason = 'manual' WHERE enabled = 0")
    op.create_table(
        "notifications",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("job_id", BigId),
        sa.Column("run_id", BigId),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("payload", LongText, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", _instant(), nullable=False),
        sa.Column("delivered_at", _instant()),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_notifications_status_next", "notifications", ["status", "next_attempt_at"])
    op.create_table(
        "job_late_watermarks",
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("checked_until", _instant(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_late_watermarks")
    op.drop_index("ix_notifications_status_next", table_name="notifications")
    op.drop_table("notifications")
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("late_at")
    with op.batch_alter_table("jobs") as batch:
        for name, _kind in reversed(JOB_COLUMNS):
            batch.drop_column(name)
