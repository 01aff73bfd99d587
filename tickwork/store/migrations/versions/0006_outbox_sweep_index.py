"""The outbox sweep's index: (status, enqueued_at, available_at) in place of (status, available_at)

The sweep looks for PENDING rows never published (``enqueued_at`` NULL) and for published ones
no worker claimed within the grace. On ``(status, available_at)`` it read and sorted every
PENDING row older than the grace on each pass (once a second): 0.5 s of MariaDB per pass with a
backlog of 200,000 (benchmarks/results/outbox_backlog.json). With ``enqueued_at`` second, each
kind is an index range read in order and stopped at the limit. Every other query on the old
index used only its ``status`` prefix (status counts, RUNNING rows, the DLQ), which this one has.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_runs_status_enqueued", "job_runs", ["status", "enqueued_at", "available_at"])
    op.drop_index("ix_job_runs_status_available", table_name="job_runs")


def downgrade() -> None:
    op.create_index("ix_job_runs_status_available", "job_runs", ["status", "available_at"])
    op.drop_index("ix_job_runs_status_enqueued", table_name="job_runs")
