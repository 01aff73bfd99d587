"""Migration 0004 (issue 14) on SQLite: it makes what the models declare, and it downgrades."""

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

NEW_TABLES = {"events", "trigger_keys"}


def test_head_matches_the_models_for_the_new_tables_and_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert head_revision() >= "0004"
    engine = make_engine(url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    mine = [
        d
        for d in diffs
        if any(t in repr(d) for t in NEW_TABLES) or "max_concurrency" in repr(d) or "'tags'" in repr(d)
    ]
    assert mine == []
    columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
    assert {"tags", "max_concurrency"} <= columns
    engine.dispose()


def test_downgrade_removes_them_and_upgrade_restores_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    command.downgrade(alembic_config(url), "0003")
    engine = make_engine(url)
    inspector = inspect(engine)
    assert not NEW_TABLES & set(inspector.get_table_names())
    assert not {"tags", "max_concurrency"} & {c["name"] for c in inspector.get_columns("jobs")}
    engine.dispose()
    upgrade(url)
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) >= NEW_TABLES
    engine.dispose()
