"""jobs and job_runs

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from tickwork.store.models import BigId, LongText, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cron_expression", sa.String(200)),
        sa.Column("run_at", UTCDateTime()),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("handler_type", sa.String(16), nullable=False),
        sa.Column("handler_data", sa.String(2048), nullable=False),
        sa.Column("parameters", sa.JSON),
        sa.Column("retry_count", sa.Integer, nullable=False),
        sa.Column("retry_backoff_seconds", sa.Integer, nullable=False),
        sa.Column("max_backoff_seconds", sa.Integer, nullable=False),
        sa.Column("timeout_seconds", sa.Float),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("misfire_policy", sa.String(16), nullable=False),
        sa.Column("misfire_grace_seconds", sa.Float),
        sa.Column("overlap_policy", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("next_fire_at", UTCDateTime()),
        sa.Column("last_fire_at", UTCDateTime()),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_jobs_name"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_jobs_next_fire_at", "jobs", ["next_fire_at"])
    op.create_table(
        "job_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.String(128)),
        sa.Column("message_id", sa.String(64)),
        sa.Column("available_at", UTCDateTime(), nullable=False),
        sa.Column("enqueued_at", UTCDateTime()),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("arguments", sa.JSON),
        sa.Column("output", LongText),
        sa.Column("error", sa.Text),
        sa.Column("traceback", LongText),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "scheduled_for", "attempt", name="uq_job_runs_fire_attempt"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_job_runs_job_id_id", "job_runs", ["job_id", "id"])
    op.create_index("ix_job_runs_status_available", "job_runs", ["status", "available_at"])
    op.create_index("ix_job_runs_created_at", "job_runs", ["created_at"])
    op.create_index("ix_job_runs_worker_status", "job_runs", ["worker_id", "status"])


def downgrade() -> None:
    op.drop_table("job_runs")
    op.drop_table("jobs")
