"""Scratch MariaDB databases and mariadbd's CPU, for the benchmarks.

Side-effect free (no ``sys.path`` change, no tickwork import at module level): a benchmark run
against a git worktree (``PYTHONPATH=/path/to/worktree``) may import it and still run the
worktree's tickwork.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, text

if TYPE_CHECKING:
    from tickwork.config import Settings

MYSQL = os.environ.get("TICKWORK_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")


def create_database(prefix: str) -> tuple[str, Any, str]:
    """A fresh database (also the run's namespace): its name, a server engine, its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    server = create_engine(MYSQL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    return name, server, f"{MYSQL}/{name}"


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[Settings]:
    """A fresh, migrated database (dropped afterwards): settings pointing at it."""
    from tickwork.config import load_settings
    from tickwork.store.engine import upgrade

    name, server, url = create_database(prefix)
    try:
        settings = load_settings(database_url=url, namespace=f"tw{name[-6:]}")
        upgrade(settings)
        yield settings
    finally:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


def mariadb_cpu() -> float:
    """CPU seconds of the local mariadbd (user + system)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "mariadbd":
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                continue
    return 0.0
