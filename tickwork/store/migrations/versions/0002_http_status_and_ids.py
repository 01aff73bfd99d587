"""job_runs.http_status; ids never reused on SQLite (AUTOINCREMENT)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        # MySQL/MariaDB: InnoDB's AUTO_INCREMENT never hands out a deleted id again.
        op.add_column("job_runs", sa.Column("http_status", sa.Integer))
        return
    # SQLite hands out max(rowid)+1, so the ids of deleted newest rows come back, unless the
    # table is declared AUTOINCREMENT: both tables are rebuilt so (env.py turns foreign keys
    # off for the rebuild, so dropping the old ``jobs`` cascades nothing).
    with op.batch_alter_table("jobs", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass
    with op.batch_alter_table(
        "job_runs", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.add_column(sa.Column("http_status", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("job_runs") as batch:
        batch.drop_column("http_status")
