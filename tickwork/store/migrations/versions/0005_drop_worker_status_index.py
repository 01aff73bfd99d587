"""Drop ix_job_runs_worker_status: the worker's hot path maintained it on every claim and finish

Every query on ``worker_id`` also asks for ``status = 'RUNNING'`` (the reaper, a worker's own
outcome writes), and RUNNING rows are few (those in flight), so ``ix_job_runs_status_available``
finds them. The index cost MariaDB two entry moves per attempt (issue 15: ~10 % of its CPU per job
in the worker drain).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_job_runs_worker_status", table_name="job_runs")


def downgrade() -> None:
    op.create_index("ix_job_runs_worker_status", "job_runs", ["worker_id", "status"])
