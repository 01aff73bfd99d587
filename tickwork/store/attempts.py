"""Queries the worker runtime needs beyond ``runs.py``: the hot path, retries, dead letters, reaping.

The hot path (claim, finish) is one ``UPDATE`` each, group-committed by one thread per process
on a kept driver connection: no pool checkout, no pre-ping and no ORM layer per message, one
round trip and one log flush per group.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, select, update

from tickwork.errors import Conflict, NotFound
from tickwork.store.engine import session_factory
from tickwork.store.models import JobRun, RunStatus, RunTrigger, runs_table, utcnow
from tickwork.store.runs import finish_attempt, insert_run

#: The most claim/finish statements committed in one transaction.
DEFAULT_MAX_BATCH = 64

# The hot path's two statements, as plain SQL on the driver connection: SQLAlchemy's statement
# building and result machinery cost about as much CPU per message as all of Dramatiq.
CLAIM_SQL = (
    "UPDATE job_runs SET status = ?, worker_id = ?, started_at = ?, updated_at = ?,"
    " message_id = COALESCE(?, message_id) WHERE id = ? AND status = ?"
)
FINISH_SQL = (
    "UPDATE job_runs SET status = ?, output = ?, error = ?, traceback = ?, finished_at = ?,"
    " updated_at = ? WHERE id = ? AND status = ? AND worker_id = ?"
)


class AttemptRecorder:
    """Claims and finishes attempts with one statement each, committed in groups.

    Worker threads hand their statement to one committer thread per process, which runs what has
    queued up (up to ``max_batch`` statements) in one transaction and commits once: each
    statement is still its own compare-and-set ``UPDATE`` with its own row count, and each
    caller returns only after the commit, but concurrent attempts share one log flush instead of
    paying one each. If a group's transaction fails, its statements are retried one by one.

    Parameters:
      engine: the store's engine.
      max_batch: the most statements committed together.
    """

    def __init__(self, engine: Engine, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._conn: Any = None
        self._format_style = engine.dialect.paramstyle in ("format", "pyformat")
        #: PyMySQL: a group goes to the server as one multi-statement query.
        self._multi = engine.dialect.driver == "pymysql"
        self._claim_sql = self._sql(CLAIM_SQL)
        self._finish_sql = self._sql(FINISH_SQL)

    def _ensure_thread(self) -> None:
        pid = os.getpid()
        if self._thread is not None and self._pid == pid and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != pid or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()
                self._conn = None
                self._pid = pid
                self._thread = threading.Thread(target=self._commit_loop, name="tickwork-commit", daemon=True)
                self._thread.start()

    def _submit(self, sql: str, params: tuple[Any, ...], run_id: int) -> bool:
        self._ensure_thread()
        pending = _Pending(sql, params, run_id)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> Any:
        if not self._multi:
            return self.engine.raw_connection()
        import pymysql
        from pymysql.constants import CLIENT

        _, params = self.engine.dialect.create_connect_args(self.engine.url)
        params["client_flag"] = params.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS
        return pymysql.connect(
            **params,
            autocommit=False,
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        )

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # the connection is being thrown away anyway
                conn.invalidate()

    def _commit_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            # Rows locked in id order, as every multi-row UPDATE on job_runs locks them: two
            # groups (or a group and the scheduler's enqueued_at update) cannot deadlock.
            batch.sort(key=lambda p: p.run_id)
            self._commit(batch)

    def _run_batch(self, batch: list[_Pending]) -> list[bool]:
        conn = self._connection()
        cursor = conn.cursor()
        try:
            if self._multi:
                # Every statement and the COMMIT in one round trip; each result set still
                # carries its own statement's row count.
                cursor.execute(";\n".join([*(cursor.mogrify(p.sql, p.params) for p in batch), "COMMIT"]))
                results = [cursor.rowcount == 1]
                for _ in batch[1:]:
                    cursor.nextset()
                    results.append(cursor.rowcount == 1)
                cursor.nextset()  # the COMMIT's
                return results
            results = []
            for p in batch:
                cursor.execute(p.sql, p.params)
                results.append(cursor.rowcount == 1)
            conn.commit()
            return results
        except BaseException:
            try:
                conn.rollback()
            finally:
                self._discard()
            raise
        finally:
            cursor.close()

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = self._run_batch(batch)
        except Exception:  # noqa: BLE001 - retried one by one below
            for p in batch:
                try:
                    p.result = self._run_batch([p])[0]
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    p.error = exc
                p.done.set()
            return
        for p, result in zip(batch, results, strict=True):
            p.result = result
            p.done.set()

    def _sql(self, template: str) -> str:
        # The two statements are written once, in the driver's own parameter style.
        return template.replace("?", "%s") if self._format_style else template

    def _time(self) -> Any:
        now = utcnow().replace(tzinfo=None)
        return now if self._format_style else now.strftime("%Y-%m-%d %H:%M:%S.%f")

    def claim(self, run_id: int, worker_id: str, *, message_id: str | None = None) -> bool:
        """PENDING → RUNNING (the same statement as ``runs.claim_attempt``, without the ORM layer)."""
        now = self._time()
        return self._submit(
            self._claim_sql,
            (RunStatus.RUNNING.value, worker_id, now, now, message_id, run_id, RunStatus.PENDING.value),
            run_id,
        )

    def finish(
        self,
        run_id: int,
        worker_id: str,
        *,
        status: RunStatus,
        output: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
    ) -> bool:
        """RUNNING → ``status``, only by the claiming worker (as ``runs.finish_attempt``)."""
        now = self._time()
        return self._submit(
            self._finish_sql,
            (str(status), output, error, traceback, now, now, run_id, RunStatus.RUNNING.value, worker_id),
            run_id,
        )

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self._queue.put(None)
            self._thread.join(timeout=5)
        self._discard()


class _Pending:
    __slots__ = ("done", "error", "params", "result", "run_id", "sql")

    def __init__(self, sql: str, params: tuple[Any, ...], run_id: int) -> None:
        self.sql = sql
        self.params = params
        self.run_id = run_id
        self.done = threading.Event()
        self.result = False
        self.error: BaseException | None = None


def finish_and_retry(
    engine: Engine,
    run_id: int,
    worker_id: str,
    *,
    job_id: int,
    scheduled_for: datetime,
    next_attempt: int,
    available_at: datetime,
    arguments: dict[str, Any] | None,
    output: str | None,
    error: str | None,
    traceback: str | None,
    finished_status: RunStatus = RunStatus.FAILED,
    reaping: bool = False,
) -> int | None:
    """Attempt n FAILED and attempt n+1 PENDING in one transaction; None if n was not ours to fail.

    ``reaping`` fails the attempt of another (lost) worker: the compare-and-set then matches
    that worker's id, exactly as the worker itself would.
    """
    now = utcnow()
    with engine.begin() as conn:
        if not finish_attempt(
            conn,
            run_id,
            worker_id,
            status=finished_status,
            output=output,
            error=error,
            traceback=traceback,
            now=now,
        ):
            return None
        return insert_run(
            conn,
            job_id=job_id,
            scheduled_for=scheduled_for,
            attempt=next_attempt,
            trigger=RunTrigger.RETRY,
            available_at=available_at,
            arguments=arguments,
            now=now,
        )


@dataclass(frozen=True)
class RunningAttempt:
    id: int
    job_id: int
    worker_id: str
    attempt: int
    scheduled_for: datetime
    arguments: dict[str, Any] | None
    started_at: datetime | None


def running_workers(engine: Engine) -> list[str | None]:
    """The workers holding RUNNING attempts (the reaper checks each one's heartbeat once)."""
    c = runs_table.c
    with engine.connect() as conn:
        return list(conn.scalars(select(c.worker_id).where(c.status == RunStatus.RUNNING.value).distinct()))


def running_attempts(
    engine: Engine,
    *,
    worker_id: str | None = None,
    any_worker: bool = True,
    started_before: datetime | None = None,
    limit: int = 1000,
) -> list[RunningAttempt]:
    """RUNNING attempts, oldest first: all of them, or (``any_worker=False``) ``worker_id``'s."""
    c = runs_table.c
    query = select(c.id, c.job_id, c.worker_id, c.attempt, c.scheduled_for, c.arguments, c.started_at).where(
        c.status == RunStatus.RUNNING.value
    )
    if not any_worker:
        query = query.where(c.worker_id.is_(None) if worker_id is None else c.worker_id == worker_id)
    if started_before is not None:
        query = query.where(c.started_at < started_before)
    query = query.order_by(c.id).limit(limit)
    with engine.connect() as conn:
        return [
            RunningAttempt(
                id=row.id,
                job_id=row.job_id,
                worker_id=row.worker_id or "",
                attempt=row.attempt,
                scheduled_for=row.scheduled_for,
                arguments=row.arguments,
                started_at=row.started_at,
            )
            for row in conn.execute(query)
        ]


def list_dead_runs(
    engine: Engine, *, job_id: int | None = None, limit: int = 50, before_id: int | None = None
) -> list[JobRun]:
    query = select(JobRun).where(JobRun.status == RunStatus.DEAD.value)
    if job_id is not None:
        query = query.where(JobRun.job_id == job_id)
    if before_id is not None:
        query = query.where(JobRun.id < before_id)
    with session_factory(engine)() as session:
        return list(session.scalars(query.order_by(JobRun.id.desc()).limit(limit)))


def replay_dead_run(engine: Engine, run_id: int) -> tuple[JobRun, int, int]:
    """DEAD → REPLAYED and a new PENDING attempt (max + 1), in one transaction.

    Returns the dead row, the new run id and its attempt number. A run that is not DEAD raises
    :class:`Conflict`; a missing one :class:`NotFound`.
    """
    now = utcnow()
    c = runs_table.c
    with engine.begin() as conn:
        row = conn.execute(select(runs_table).where(c.id == run_id)).first()
        if row is None:
            raise NotFound(f"run {run_id} not found")
        changed = conn.execute(
            update(runs_table)
            .where(and_(c.id == run_id, c.status == RunStatus.DEAD.value))
            .values(status=RunStatus.REPLAYED.value, updated_at=now)
        )
        if changed.rowcount != 1:
            raise Conflict(f"run {run_id} is {row.status}, not DEAD: only dead runs can be replayed")
        last = conn.scalar(
            select(func.max(c.attempt)).where(
                and_(c.job_id == row.job_id, c.scheduled_for == row.scheduled_for)
            )
        )
        attempt = int(last or row.attempt) + 1
        new_id = insert_run(
            conn,
            job_id=row.job_id,
            scheduled_for=row.scheduled_for,
            attempt=attempt,
            trigger=RunTrigger.REPLAY,
            arguments=row.arguments,
            now=now,
        )
    return get_run_row(engine, run_id), new_id, attempt


def discard_dead_runs(engine: Engine, run_ids: list[int] | None = None) -> list[int]:
    """DEAD → DISCARDED for ``run_ids`` (all dead runs when None); returns the ids changed."""
    now = utcnow()
    c = runs_table.c
    with engine.begin() as conn:
        query = select(c.id).where(c.status == RunStatus.DEAD.value)
        if run_ids is not None:
            query = query.where(c.id.in_(run_ids))
        ids = [int(i) for i in conn.scalars(query.with_for_update())]
        if ids:
            conn.execute(
                update(runs_table)
                .where(and_(c.id.in_(ids), c.status == RunStatus.DEAD.value))
                .values(status=RunStatus.DISCARDED.value, updated_at=now)
            )
    return ids


def get_run_row(engine: Engine, run_id: int) -> JobRun:
    with session_factory(engine)() as session:
        run = session.get(JobRun, run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return run
