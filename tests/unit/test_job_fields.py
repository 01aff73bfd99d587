"""A job's fields are the ``jobs`` table's columns: every model that shows or reads a job names
them exactly, so a column added, renamed or dropped fails here instead of drifting apart."""

from __future__ import annotations

from dataclasses import fields

import pytest

from tickwork.api.dashboard import JobRow
from tickwork.store.models import JOB_SNAPSHOT_COLUMNS, JobSnapshot, jobs_table
from tickwork.store.stats import JOB_SUMMARY_COLUMNS, JobSummary
from tickwork.views import JobOut

pytestmark = pytest.mark.unit

COLUMNS = [c.name for c in jobs_table.columns]
#: Bookkeeping of the alerts (issue 13) that a reader sees through ``health`` instead.
INTERNAL = ["resumed_at", "late_since", "failing_since", "late_fire_at"]
#: Shown, but computed from the run history, not stored in ``jobs``.
DERIVED = ["health", "last_success_at"]


def test_job_out_shows_every_column_in_table_order() -> None:
    assert set(INTERNAL) <= set(COLUMNS)
    assert list(JobOut.model_fields) == [c for c in COLUMNS if c not in INTERNAL] + DERIVED


def test_the_snapshot_a_fire_reads_is_columns_of_the_table() -> None:
    assert tuple(f.name for f in fields(JobSnapshot)) == JOB_SNAPSHOT_COLUMNS
    assert set(JOB_SNAPSHOT_COLUMNS) <= set(COLUMNS)


def test_the_dashboard_row_is_the_store_summary() -> None:
    assert list(JobRow.model_fields) == [f.name for f in fields(JobSummary)]
    assert set(JOB_SUMMARY_COLUMNS) <= set(COLUMNS)
    assert set(JobRow.model_fields) - set(JOB_SUMMARY_COLUMNS) == {
        "last_run_id",
        "last_status",
        "last_run_at",
        *DERIVED,
    }
