"""The start-up schema gate reads the database's revision without Alembic, against a constant
that must stay Alembic's head (a worker's start-up no longer imports Alembic)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext

from tickwork.errors import DatabaseNotMigrated
from tickwork.store.engine import (
    SCHEMA_REVISION,
    alembic_config,
    current_revision,
    ensure_migrated,
    head_revision,
    make_engine,
    stored_revisions,
    upgrade,
)

pytestmark = pytest.mark.unit


def _alembics_current(url: str) -> str | None:
    """What Alembic itself reads as the database's revision."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_the_gates_revision_is_alembics_head() -> None:
    """A new migration must move SCHEMA_REVISION too, or every process would refuse its schema."""
    assert head_revision() == SCHEMA_REVISION


def test_the_gate_refuses_no_schema_and_an_older_revision_and_passes_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    engine = make_engine(url)
    try:
        assert stored_revisions(engine) == set()
        with pytest.raises(DatabaseNotMigrated, match=r"has no tickwork schema.*tickwork db upgrade"):
            ensure_migrated(engine)
        upgrade(url, "0005")
        assert stored_revisions(engine) == {"0005"} == {current_revision(engine), _alembics_current(url)}
        with pytest.raises(DatabaseNotMigrated, match=f"is at revision 0005, expected {SCHEMA_REVISION}"):
            ensure_migrated(engine)
        upgrade(url)
        assert (
            stored_revisions(engine)
            == {SCHEMA_REVISION}
            == {current_revision(engine), _alembics_current(url)}
        )
        ensure_migrated(engine)
        command.downgrade(alembic_config(url), "base")
        assert current_revision(engine) is None is _alembics_current(url)
        with pytest.raises(DatabaseNotMigrated, match="has no tickwork schema"):
            ensure_migrated(engine)
    finally:
        engine.dispose()


def test_importing_the_worker_does_not_import_alembic() -> None:
    code = "import sys, tickwork.worker; print('alembic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
