"""Migration 0005 (issue 15): the worker-status index is gone, the models agree, and it downgrades."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from tickwork.store.engine import alembic_config, head_revision, make_engine, upgrade
from tickwork.store.models import Base

pytestmark = pytest.mark.unit

INDEX = "ix_job_runs_worker_status"


def _indexes(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {i["name"] for i in inspect(engine).get_indexes("job_runs")}
    finally:
        engine.dispose()


def test_head_has_no_worker_status_index_and_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert head_revision() >= "0005"
    assert INDEX not in _indexes(url)
    assert "ix_job_runs_status_enqueued" in _indexes(url)  # since 0006 (the outbox sweep's)
    engine = make_engine(url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert [d for d in diffs if "job_runs" in repr(d) and "index" in repr(d).lower()] == []


def test_downgrade_restores_the_index_and_upgrade_drops_it_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    command.downgrade(alembic_config(url), "0004")
    assert INDEX in _indexes(url)
    upgrade(url)
    assert INDEX not in _indexes(url)


def test_0006_swaps_the_status_index_for_the_outbox_sweeps_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert head_revision() >= "0006"
    assert "ix_job_runs_status_available" not in _indexes(url)
    command.downgrade(alembic_config(url), "0005")
    assert "ix_job_runs_status_available" in _indexes(url)
    assert "ix_job_runs_status_enqueued" not in _indexes(url)
    upgrade(url)
    assert "ix_job_runs_status_enqueued" in _indexes(url)
    assert "ix_job_runs_status_available" not in _indexes(url)
