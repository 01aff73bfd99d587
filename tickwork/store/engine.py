"""Engines, sessions and the migration gate."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, Engine, Table, create_engine, delete, event, inspect, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tickwork.config import Settings
from tickwork.config.settings import sqlite_file
from tickwork.errors import DatabaseMissing, DatabaseNotMigrated

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: The schema revision this code runs on: Alembic's head, kept equal to it by a test. The gate
#: every process passes at start-up compares the database with it without importing Alembic
#: (~0.15-0.2 s of each worker's start-up); migrating and the ``db`` commands use Alembic.
SCHEMA_REVISION = "0006"

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: MySQL errors after which the whole transaction may simply be run again.
TRANSIENT_MYSQL_ERRORS = frozenset({1205, 1213})  # lock wait timeout, deadlock
DEFAULT_TRANSIENT_ATTEMPTS = 4
#: MySQL client/server errors that mean "the server cannot be reached right now": can't connect
#: (2002, 2003), server gone away or connection lost (2006, 2013, 2055), server shutting down
#: (1053), connection killed (1927).
UNREACHABLE_MYSQL_ERRORS = frozenset({2002, 2003, 2006, 2013, 2055, 1053, 1927})


def make_engine(url: str | Settings, **kwargs: Any) -> Engine:
    """An engine tuned for the dialect: pooled PyMySQL (or mysqlclient), or SQLite in WAL mode."""
    if isinstance(url, Settings):
        url = url.database_url
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_recycle", 3600)
    return create_engine(url, isolation_level="READ COMMITTED", **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | Settings, revision: str = "head") -> None:
    """Apply migrations (``tickwork db upgrade``)."""
    from alembic import command

    if isinstance(url, Settings):
        url = url.database_url
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


def stored_revisions(engine: Engine) -> set[str]:
    """The revisions in the database's ``alembic_version`` table (none without a schema): what
    Alembic's ``current`` reads, read without importing Alembic."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return set()
        return set(conn.scalars(text("SELECT version_num FROM alembic_version")))


def current_revision(engine: Engine) -> str | None:
    """The database's revision, None without a schema (``tickwork db current``)."""
    stored = stored_revisions(engine)
    if len(stored) > 1:  # tickwork's history is linear: Alembic would refuse this too
        raise DatabaseNotMigrated(f"database has several revisions {', '.join(sorted(stored))}")
    return next(iter(stored), None)


def ping(engine: Engine) -> None:
    """One ``SELECT 1``: raises if the database cannot answer (the API's readiness check)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def ensure_database_exists(url: str | Settings) -> None:
    """Refuse (:class:`DatabaseMissing`) a SQLite URL whose file does not exist, before connecting
    would create it: a command run in the wrong directory names the database it looked for."""
    if isinstance(url, Settings):
        url = url.database_url
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise DatabaseMissing(
            f"no tickwork database at {url} ({path.resolve()}): run this where `tickwork dev` runs "
            "(it creates the database there), or point TICKWORK_DATABASE_URL at its database"
        )


def ensure_migrated(engine: Engine) -> None:
    """Refuse to run on a database that `tickwork db upgrade` has not brought to head."""
    stored = stored_revisions(engine)
    if stored != {SCHEMA_REVISION}:
        where = engine.url.render_as_string(hide_password=True)
        state = "has no tickwork schema" if not stored else f"is at revision {', '.join(sorted(stored))}"
        raise DatabaseNotMigrated(
            f"database {where} {state}, expected {SCHEMA_REVISION}: run `tickwork db upgrade`"
        )


def is_transient(exc: BaseException) -> bool:
    """A deadlock or lock wait timeout: InnoDB rolled the transaction back; running it again is safe."""
    if not isinstance(exc, OperationalError):
        return False
    code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
    return code in TRANSIENT_MYSQL_ERRORS


def is_unreachable(exc: BaseException) -> bool:
    """The database could not be reached (down, restarting, a cut network): the statement did not
    run, or its connection died; once the server answers again, trying again is the remedy.

    Takes SQLAlchemy's errors and the drivers' own (the recorder talks to PyMySQL or
    mysqlclient directly); both drivers raise the server's error codes in ``args[0]``.
    """
    orig: BaseException | None = exc
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
    interface, operational = _driver_errors()
    if isinstance(orig, interface):
        return True  # a closed connection was used
    if isinstance(orig, operational):
        return bool(orig.args) and orig.args[0] in UNREACHABLE_MYSQL_ERRORS
    return False


@functools.cache
def _driver_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(InterfaceError, OperationalError) classes of the MySQL drivers that are installed."""
    import pymysql

    interface: list[type[BaseException]] = [pymysql.err.InterfaceError]
    operational: list[type[BaseException]] = [pymysql.err.OperationalError]
    try:
        import MySQLdb  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        pass
    else:
        interface.append(MySQLdb.InterfaceError)
        operational.append(MySQLdb.OperationalError)
    return tuple(interface), tuple(operational)


def retry_transient(fn: Callable[[], T], *, attempts: int = DEFAULT_TRANSIENT_ATTEMPTS) -> T:
    """Run a self-contained transaction again after a deadlock or lock wait timeout.

    Only for ``fn`` that opens and commits its own transaction: the rolled-back attempt left
    nothing behind, so the next one starts clean.
    """
    for n in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            if n == attempts - 1 or not is_transient(exc):
                raise
            logger.info("transaction rolled back by the database (%s); running it again", exc.orig)
            time.sleep(0.01 * 2**n)
    raise AssertionError("unreachable")


def delete_in_batches(
    engine: Engine,
    table: Table,
    *where: ColumnElement[bool],
    order_by: Any = None,
    batch_size: int = 1000,
    max_seconds: float | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> int:
    """Delete the rows matching ``where``, ``batch_size`` per transaction; returns how many.

    Retention on busy tables: short transactions hold their locks briefly. It stops when no
    row matches, after ``max_seconds``, or when ``keep_going()`` says so (the next call goes on).
    """
    key = table.c.id
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    deleted = 0
    while keep_going is None or keep_going():
        with engine.begin() as conn:
            query = select(key).where(*where).order_by(key if order_by is None else order_by)
            ids = list(conn.scalars(query.limit(batch_size)))
            if not ids:
                break
            conn.execute(delete(table).where(key.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch_size or (deadline is not None and time.monotonic() > deadline):
            break
    return deleted
