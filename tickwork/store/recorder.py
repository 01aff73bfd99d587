"""The worker's hot path: claim an attempt (PENDING → RUNNING) and finish it, group-committed.

Worker threads hand their claim or finish to one committer thread per process, which commits
what has queued up in one transaction, so concurrent attempts share one round trip and one log
flush. Each caller still gets its own answer (did *its* compare-and-set win?) and returns only
after the commit.

On MySQL/MariaDB (PyMySQL) a group is one multi-statement query: the claims of a worker in one
``UPDATE … WHERE id IN (…) AND status = 'PENDING'``, its finishes with the same status in one
``UPDATE … WHERE id IN (…) AND status = 'RUNNING' AND worker_id = …`` (outputs that differ in a
``CASE id``), then ``COMMIT``. When a statement matches every row it names (the normal case)
each caller has won; otherwise the rows it did change are identified afterwards by the group's
unique timestamp. SQLAlchemy's statement building and PyMySQL's per-statement result parsing
cost more CPU per message than all of Dramatiq, which is why this path is plain SQL on a kept
driver connection.

On SQLite (the embedded mode) a group runs the store's own ``claim_attempt`` and
``finish_attempt`` one by one in one transaction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from tickwork.store.models import RunStatus, utcnow
from tickwork.store.runs import claim_attempt, finish_attempt

logger = logging.getLogger(__name__)

#: The most claims and finishes committed in one transaction.
DEFAULT_MAX_BATCH = 64
#: Committer threads per process on MySQL (see :class:`AttemptRecorder`). One: with successes
#: written without holding a worker thread, a second committer made smaller groups and more CPU
#: per job, and drained slower (benchmarks/results/worker_committers_1.json, _4.json).
DEFAULT_COMMITTERS = 1
#: Under load, how long a committer waits for more claims and finishes before it commits (see
#: :class:`AttemptRecorder`).
DEFAULT_COMMIT_DELAY = 0.001
#: How long a group of outcomes written without a waiting caller (successes) waits for a claim to
#: be committed with (see :class:`AttemptRecorder`).
DEFAULT_FINISH_LINGER = 0.02

CLAIM = "claim"
FINISH = "finish"

_clock_lock = threading.Lock()
_last_time = datetime.min

#: This process's id, kept current by a fork hook: every claim and finish checks whether it runs
#: in the process that started the committer, and ``os.getpid()`` is a system call.
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def group_time() -> datetime:
    """Now (naive UTC), strictly increasing within the process: a group's rows are the only ones
    of this worker carrying its exact ``started_at`` / ``finished_at``."""
    global _last_time
    now = utcnow().replace(tzinfo=None)
    with _clock_lock:
        if now <= _last_time:
            now = _last_time + timedelta(microseconds=1)
        _last_time = now
    return now


class _Pending:
    """One caller's claim or finish, waiting for its group's commit."""

    __slots__ = ("done", "error", "kind", "message_id", "outcome", "result", "run_id", "then", "worker_id")

    def __init__(
        self,
        kind: str,
        run_id: int,
        worker_id: str,
        *,
        message_id: str | None = None,
        outcome: tuple[str, str | None, str | None, str | None, int | None] | None = None,
        then: Callable[[bool, BaseException | None], None] | None = None,
    ) -> None:
        self.kind = kind
        self.run_id = run_id
        self.worker_id = worker_id
        self.message_id = message_id
        #: For a finish: (status, output, error, traceback, http_status).
        self.outcome = outcome
        #: Called by the committer with (result, error) instead of waking a waiting caller.
        self.then = then
        # A held lock the committer releases: cheaper to wait on than an Event (no Condition).
        self.done = threading.Lock()
        self.done.acquire()
        self.result = False
        self.error: BaseException | None = None


class AttemptRecorder:
    """Claims and finishes attempts with compare-and-set ``UPDATE``\\ s, committed in groups.

    If a group's transaction fails (a deadlock victim, a lost connection), its claims and
    finishes are run again one by one, each in its own transaction.

    Parameters:
      engine: the store's engine.
      max_batch: the most claims and finishes committed together.
      committers: committer threads (each with its own connection) on MySQL. With one, a claim
        arriving while a group is being committed waits for that group's round trip and log
        flush; with more, the next group goes out at once, but groups are smaller (measured:
        slower overall). SQLite has one writer: always one committer there.
      commit_delay: seconds a committer waits for more claims and finishes before it commits a
        group, on MySQL, when the last group held more than one claim (under load; a lone claim
        is never delayed). MariaDB's cost of a transaction is mostly per commit, not per row:
        20,000 status changes took 3.4 s of its CPU in groups of 6 and 1.0 s in groups of 30.
        With 1 ms, MariaDB's CPU per job in a drain fell by a quarter (0.19 vs 0.245 ms,
        benchmarks/results/worker_profile.txt, section 6); like PostgreSQL's ``commit_delay``
        with ``commit_siblings``.
      finish_linger: seconds a group holding only outcomes nobody waits for (successes, from
        :meth:`finish_later`) waits for a claim to be committed with; a claim or a waited-for
        finish ends the wait at once. Without it, at a moderate rate a success was committed
        alone right after its claim, and the next claim waited for that commit before its own:
        enqueue → start p99 at 200 jobs/s 16-41 ms with none, 11-20 ms with 20 ms, better in
        each of five alternating pairs (benchmarks/results/worker_profile.txt, section 8).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        committers: int = DEFAULT_COMMITTERS,
        commit_delay: float = DEFAULT_COMMIT_DELAY,
        finish_linger: float = DEFAULT_FINISH_LINGER,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._pid = 0
        self._lock = threading.Lock()
        #: Each committer thread's driver connection (kept across groups).
        self._local = threading.local()
        self._conns: list[Any] = []
        #: MySQL: a group goes to the server as one multi-statement query.
        self._merge = engine.dialect.name == "mysql"
        self.committers = max(1, committers) if self._merge else 1
        self.commit_delay = commit_delay if self._merge else 0.0
        self.finish_linger = finish_linger

    # -- the two calls ------------------------------------------------------------------------

    def claim(self, run_id: int, worker_id: str, *, message_id: str | None = None) -> bool:
        """PENDING → RUNNING for ``worker_id``; False if someone else has (or had) the attempt."""
        return self._submit(_Pending(CLAIM, run_id, worker_id, message_id=message_id))

    def finish(
        self,
        run_id: int,
        worker_id: str,
        *,
        status: RunStatus,
        output: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
        http_status: int | None = None,
    ) -> bool:
        """RUNNING → ``status``, only by the claiming worker; False if it no longer held it."""
        outcome = (str(status), output, error, traceback, http_status)
        return self._submit(_Pending(FINISH, run_id, worker_id, outcome=outcome))

    def finish_later(
        self,
        run_id: int,
        worker_id: str,
        then: Callable[[bool, BaseException | None], None],
        *,
        status: RunStatus,
        output: str | None = None,
        http_status: int | None = None,
    ) -> None:
        """:meth:`finish` without waiting: ``then(finished, error)`` runs on a committer thread
        once the group holding it is committed (or failed). ``then`` must be quick."""
        outcome = (str(status), output, None, None, http_status)
        self._ensure_thread()
        self._queue.put(_Pending(FINISH, run_id, worker_id, outcome=outcome, then=then))

    def warm(self) -> None:
        """Start the committer threads and open their connections now (at worker boot), so the
        first claims do not wait for a MySQL connect: measured as a worker's slowest starts."""
        self._ensure_thread()

    def close(self) -> None:
        if self._pid == _pid:
            alive = [t for t in self._threads if t.is_alive()]
            if alive:
                self._queue.put(None)  # each committer passes it on to the next
                for thread in alive:
                    thread.join(timeout=5)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(Exception):  # closing anyway
                conn.close()

    # -- the committer ------------------------------------------------------------------------

    def _submit(self, pending: _Pending) -> bool:
        self._ensure_thread()
        self._queue.put(pending)
        pending.done.acquire()  # released by the committer once the group is committed
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _ensure_thread(self) -> None:
        pid = _pid
        threads = self._threads
        if self._pid == pid and threads and all(map(threading.Thread.is_alive, threads)):
            return
        with self._lock:
            if self._pid != pid:  # forked: the parent's threads and connections are not ours
                self._queue = queue.SimpleQueue()
                self._local = threading.local()
                self._conns = []
                self._threads = []
                self._pid = pid
            self._threads = [t for t in self._threads if t.is_alive()]
            while len(self._threads) < self.committers:
                thread = threading.Thread(target=self._commit_loop, name="tickwork-commit", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _commit_loop(self) -> None:
        busy = False  # the last group held more than one claim: more are on their way
        if self._merge:
            try:
                self._connection()  # before the first group; a failure is the first group's
            except Exception:  # the first group connects again and reports it
                logger.debug("The committer could not connect yet.", exc_info=True)
                self._discard()
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.put(None)  # for the other committers
                self._discard()
                return
            if busy and self.commit_delay > 0:
                time.sleep(self.commit_delay)
            batch = [first]
            stop = self._take_queued(batch)
            if not stop and self.finish_linger > 0 and all(p.then is not None for p in batch):
                self._linger(batch)
            # Rows in id order: a statement's IN list locks them ascending, as every multi-row
            # UPDATE on job_runs does.
            batch.sort(key=lambda p: p.run_id)
            busy = sum(p.kind == CLAIM for p in batch) > 1
            self._commit(batch)

    def _take_queued(self, batch: list[_Pending]) -> bool:
        """Add what is queued now to ``batch``; True if the end-of-work marker was among it."""
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                self._queue.put(None)  # seen again by the next get: this group is the last
                return True
            batch.append(item)
        return False

    def _linger(self, batch: list[_Pending]) -> None:
        """Outcomes nobody waits for (successes) wait up to ``finish_linger`` for a claim, and
        go with it: a claim arriving while such a group commits would wait for that commit
        first, and one commit serves both."""
        deadline = time.monotonic() + self.finish_linger
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                return
            if item is None:
                self._queue.put(None)
                return
            batch.append(item)
            if item.then is None:  # a caller waits for this one: commit now
                self._take_queued(batch)
                return

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = self._run_group(batch)
        except Exception:  # noqa: BLE001 - run again one by one below
            for p in batch:
                try:
                    p.result = self._run_group([p])[0]
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    p.error = exc
                _settle(p)
            return
        for p, result in zip(batch, results, strict=True):
            p.result = result
            _settle(p)

    def _run_group(self, batch: list[_Pending]) -> list[bool]:
        if not self._merge:
            return self._one_by_one(batch)
        conn = self._connection()
        cursor = conn.cursor()
        try:
            return self._merged(conn, cursor, batch)
        except BaseException:
            try:
                conn.rollback()
            finally:
                self._discard()
            raise
        finally:
            cursor.close()

    def _merged(self, conn: Any, cursor: Any, batch: list[_Pending]) -> list[bool]:
        """One multi-statement round trip: one UPDATE per worker's claims and per worker and
        final status of its finishes (outputs that differ go in one ``CASE``)."""
        now = group_time()
        esc = _escaper(conn)
        at = esc(now)
        results = dict.fromkeys(range(len(batch)), False)
        groups: dict[tuple[str, str, str | None], list[int]] = defaultdict(list)
        seen: set[tuple[str, int]] = set()
        for index, p in enumerate(batch):
            if (p.kind, p.run_id) in seen:
                continue  # a second claim (or finish) of the same run in this group loses
            seen.add((p.kind, p.run_id))
            groups[(p.kind, p.worker_id, p.outcome[0] if p.outcome else None)].append(index)
        statements: list[str] = []
        for (kind, worker_id, status), members in groups.items():
            ids = ",".join(str(int(batch[i].run_id)) for i in members)
            if kind == CLAIM:
                message_ids = [(batch[i].run_id, batch[i].message_id) for i in members]
                message = _column_value(esc, "message_id", message_ids, none_keeps=True)
                statements.append(
                    f"UPDATE job_runs SET status = 'RUNNING', worker_id = {esc(worker_id)},"
                    f" started_at = {at}, updated_at = {at}, message_id = {message}"
                    f" WHERE id IN ({ids}) AND status = 'PENDING'"
                )
            else:
                outcomes = [(batch[i].run_id, _outcome_values(batch[i])) for i in members]
                columns = ", ".join(
                    f"{name} = {_column_value(esc, name, [(run_id, o[name]) for run_id, o in outcomes])}"
                    for name in ("output", "http_status", "error", "traceback")
                )
                statements.append(
                    f"UPDATE job_runs SET status = {esc(status)}, {columns},"
                    f" finished_at = {at}, updated_at = {at}"
                    f" WHERE id IN ({ids}) AND status = 'RUNNING' AND worker_id = {esc(worker_id)}"
                )
        cursor.execute(";\n".join([*statements, "COMMIT"]))
        matched = [cursor.rowcount]
        for _ in statements[1:]:
            cursor.nextset()
            matched.append(cursor.rowcount)
        cursor.nextset()  # the COMMIT's
        for ((kind, worker_id, _status), members), count in zip(groups.items(), matched, strict=True):
            if count == len(members):
                won = {batch[i].run_id for i in members}
            else:  # some rows were not ours to change: find the ones this group did change
                column = "started_at" if kind == CLAIM else "finished_at"
                ids = ",".join(str(int(batch[i].run_id)) for i in members)
                cursor.execute(
                    f"SELECT id FROM job_runs WHERE id IN ({ids}) AND worker_id = {esc(worker_id)}"
                    f" AND {column} = {at}"
                )
                won = {int(row[0]) for row in cursor.fetchall()}
                conn.commit()
            for i in members:
                results[i] = batch[i].run_id in won
        return [results[i] for i in range(len(batch))]

    def _one_by_one(self, batch: list[_Pending]) -> list[bool]:
        """SQLite: the store's own compare-and-set statements, one transaction for the group."""
        now = group_time().replace(tzinfo=UTC)
        with self.engine.begin() as conn:
            return [
                claim_attempt(conn, p.run_id, p.worker_id, message_id=p.message_id, now=now)
                if p.kind == CLAIM
                else finish_attempt(conn, p.run_id, p.worker_id, **_outcome_values(p), now=now)
                for p in batch
            ]

    # -- the connection -----------------------------------------------------------------------

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._lock:
                self._conns.append(conn)
        return conn

    def _connect(self) -> Any:
        """A driver connection of the engine's driver (PyMySQL, or mysqlclient's ``MySQLdb``)
        with the engine's connect arguments, allowed to send several statements at once."""
        driver = self.engine.dialect.driver
        if driver == "mysqldb":
            import MySQLdb  # type: ignore[import-not-found,import-untyped,unused-ignore]
            from MySQLdb.constants import CLIENT  # type: ignore[import-not-found,import-untyped,unused-ignore]

            connect: Any = MySQLdb.connect
        elif driver == "pymysql":
            import pymysql
            from pymysql.constants import CLIENT

            connect = pymysql.connect
        else:
            raise ValueError(f"unsupported MySQL driver {driver!r}: use mysql+pymysql:// or mysql+mysqldb://")
        _, params = self.engine.dialect.create_connect_args(self.engine.url)
        # FOUND_ROWS (set by SQLAlchemy's dialects): a row count is rows matched, not changed.
        params["client_flag"] = params.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS
        return connect(
            **params,
            autocommit=False,
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        )

    def _discard(self) -> None:
        """Close this committer thread's connection (after an error, or at the end)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            with contextlib.suppress(Exception):  # the connection is being thrown away anyway
                conn.close()


def _settle(pending: _Pending) -> None:
    """Hand a committed claim or finish to its caller: wake it, or call its ``then``."""
    if pending.then is None:
        pending.done.release()
        return
    try:
        pending.then(pending.result, pending.error)
    except Exception:  # the committer must go on with the other callers
        logger.exception("A finish callback of run %s failed.", pending.run_id)


def _escaper(conn: Any) -> Any:
    """``value → SQL literal`` for the driver: PyMySQL's ``escape`` gives text, mysqlclient's
    ``literal`` bytes in the connection's character set."""
    if type(conn).__module__.startswith("pymysql"):
        return conn.escape
    literal = conn.literal
    encoding = conn.character_set_name()
    encoding = "utf8" if encoding.startswith("utf8") else encoding

    def esc(value: Any) -> str:
        return str(literal(value).decode(encoding))

    return esc


def _column_value(
    esc: Callable[[Any], str], column: str, values: list[tuple[int, Any]], *, none_keeps: bool = False
) -> str:
    """The SQL value of ``column`` for a group's rows, given ``(run_id, value)`` for each: one
    literal when every row gets the same (a no-op job's ``None``), else ``CASE id WHEN … END``,
    so finishes with different outputs still share one statement: with a statement per output,
    jobs returning values of their own cost MariaDB 0.11-0.17 ms of CPU per job against
    0.07-0.10 (benchmarks/results/worker_profile.txt, section 9). With ``none_keeps``, a row
    whose value is ``None`` keeps its column as it is."""
    first = values[0][1]
    if all(value == first for _, value in values):
        return column if first is None and none_keeps else esc(first)
    whens = " ".join(
        f"WHEN {int(run_id)} THEN {esc(value)}"
        for run_id, value in values
        if value is not None or not none_keeps
    )
    return f"CASE id {whens} ELSE {column} END"


def _outcome_values(pending: _Pending) -> dict[str, Any]:
    assert pending.outcome is not None
    status, output, error, traceback, http_status = pending.outcome
    return {
        "status": status,
        "output": output,
        "error": error,
        "traceback": traceback,
        "http_status": http_status,
    }
