"""The worker's hot path: claim an attempt (PENDING → RUNNING) and finish it, group-committed.

Concurrent claims and finishes of one process are committed together, in one transaction, so
they share one round trip and one log flush; each caller still gets its own answer (did *its*
compare-and-set win?) and returns only after the commit.

The group is committed by one of its callers (leader/follower, as MySQL's binlog group commit
and PostgreSQL's WAL flush do): a worker thread whose claim finds nobody committing commits
what has queued up, its own claim included; claims arriving meanwhile queue, and when the leader
is done it hands the lead to the first of them, which commits the next group. A thread waiting
for its claim is woken once, by the leader that committed it or to lead. With a separate
committer thread every group also woke the committer and every caller: the hand-off between
threads is the dearest thing on this path (a futex wake of a thread whose vCPU is idle, ~20-40 µs
of CPU on the 2-core VMs measured). Without it the drain was faster in 22 of 30 alternating
pairs of drains, by 5.5 % at the median (benchmarks/results/worker_profile.txt, section 10).
Outcomes nobody waits for (successes, :meth:`AttemptRecorder.finish_later`) go with the next
group; an outcome thread commits those still waiting after ``finish_linger``.

On MySQL/MariaDB a group is one autocommitted statement per worker (a process has one): its
claims and its finishes in one ``UPDATE … WHERE (id IN (…) AND status = 'PENDING') OR (id IN (…)
AND status = 'RUNNING' AND worker_id = …)``, each row given the claim's or the finish's columns
by its id (outputs that differ in a ``CASE id``). When the statement matches every row it names
(the normal case) each caller has won; otherwise the rows it did change are identified
afterwards by the group's unique timestamp. SQLAlchemy's statement building and PyMySQL's
per-statement result parsing cost more CPU per message than all of Dramatiq, which is why this
path is plain SQL on a kept driver connection.

On SQLite (the embedded mode) a group runs the store's own ``claim_attempt`` and
``finish_attempt`` one by one in one transaction.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from tickwork.store.models import RunStatus, utcnow
from tickwork.store.runs import claim_attempt, finish_attempt

logger = logging.getLogger(__name__)

#: The most claims and finishes committed in one transaction.
DEFAULT_MAX_BATCH = 64
#: Under load, how long a leader waits for more claims and finishes before it commits (see
#: :class:`AttemptRecorder`).
DEFAULT_COMMIT_DELAY = 0.001
#: How long outcomes written without a waiting caller (successes) wait for a claim's group to
#: be committed with (see :class:`AttemptRecorder`).
DEFAULT_FINISH_LINGER = 0.02

CLAIM = "claim"
FINISH = "finish"

_clock_lock = threading.Lock()
_last_time = datetime.min

#: This process's id, kept current by a fork hook: every claim and finish checks whether it runs
#: in the process that started the outcome thread, and ``os.getpid()`` is a system call.
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


class RecorderInterrupted(RuntimeError):
    """The thread committing this claim's or finish's group was interrupted before it answered;
    whether it was written is unknown (a claim left RUNNING is the reaper's)."""


class _Pending:
    """One caller's claim or finish, waiting for its group's commit."""

    __slots__ = (
        "abandoned",
        "done",
        "error",
        "kind",
        "lead",
        "message_id",
        "outcome",
        "queued",
        "result",
        "run_id",
        "settled",
        "then",
        "worker_id",
    )

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
        #: Called by the committing thread with (result, error) instead of waking a caller.
        self.then = then
        # A held lock released once the group is committed, or to hand the caller the lead:
        # cheaper to wait on than an Event (no Condition).
        self.done = threading.Lock()
        self.done.acquire()
        #: Set by the passing leader: this caller commits the next group.
        self.lead = False
        #: Its caller was interrupted while it waited: never handed the lead.
        self.abandoned = False
        self.settled = False
        #: When an outcome nobody waits for was queued (monotonic), for ``finish_linger``.
        self.queued = 0.0
        self.result = False
        self.error: BaseException | None = None


class AttemptRecorder:
    """Claims and finishes attempts with compare-and-set ``UPDATE``\\ s, committed in groups by
    their own callers (see the module's docstring).

    If a group's transaction fails (a deadlock victim, a lost connection), its claims and
    finishes are run again one by one, each in its own transaction.

    Parameters:
      engine: the store's engine.
      max_batch: the most claims and finishes committed together.
      commit_delay: seconds a leader waits for more claims and finishes before it commits a
        group, on MySQL, when the last group held more than one claim (under load; a lone claim
        is never delayed). MariaDB's cost of a transaction is mostly per commit, not per row:
        20,000 status changes took 3.4 s of its CPU in groups of 6 and 1.0 s in groups of 30.
        With 1 ms, MariaDB's CPU per job in a drain fell by a quarter (0.19 vs 0.245 ms,
        benchmarks/results/worker_profile.txt, section 6); like PostgreSQL's ``commit_delay``
        with ``commit_siblings``.
      finish_linger: seconds outcomes nobody waits for (successes, from :meth:`finish_later`)
        wait for a claim's group to be committed with, before the outcome thread commits them
        alone. Without it, at a moderate rate a success was committed alone right after its
        claim, and the next claim waited for that commit before its own: enqueue → start p99 at
        200 jobs/s 16-41 ms with none, 11-20 ms with 20 ms, better in each of five alternating
        pairs (benchmarks/results/worker_profile.txt, section 8).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        commit_delay: float = DEFAULT_COMMIT_DELAY,
        finish_linger: float = DEFAULT_FINISH_LINGER,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        #: MySQL: a group goes to the server as one multi-statement query.
        self._merge = engine.dialect.name == "mysql"
        self.commit_delay = commit_delay if self._merge else 0.0
        self.finish_linger = finish_linger
        self._lock = threading.Lock()  # set-up and the connection list
        self._pid = 0
        self._reset()

    def _reset(self) -> None:
        """Fresh state for this process (at start, and in a forked child: the parent's threads,
        locks and connection are not ours)."""
        #: Claims and finishes whose callers wait, in arrival order.
        self._waiting: deque[_Pending] = deque()
        #: Outcomes nobody waits for, in arrival order.
        self._outcomes: deque[_Pending] = deque()
        #: Held by the thread committing a group (the leader); handed on, not released, to the
        #: next leader.
        self._lead_lock = threading.Lock()
        #: The last group held several claims: more are on their way (the commit delay).
        self._busy = False
        #: The driver connection (MySQL), used only by the leader.
        self._conn: Any = None
        self._conns: list[Any] = []
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._dozing = False
        self._closing = False

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
        """:meth:`finish` without waiting: ``then(finished, error)`` runs on the thread that
        commits the group holding it (a worker thread leading a group, or the outcome thread)
        once it is committed (or failed). ``then`` must be quick."""
        self._ensure_started()
        pending = _Pending(
            FINISH, run_id, worker_id, outcome=(str(status), output, None, None, http_status), then=then
        )
        pending.queued = time.monotonic()
        self._outcomes.append(pending)
        if self._dozing:
            self._wake.set()

    def warm(self) -> None:
        """Start the outcome thread, which opens the connection now (at worker boot), so the
        first claims do not wait for a MySQL connect: measured as a worker's slowest starts."""
        self._ensure_started()

    def close(self) -> None:
        """Commit the outcomes still waiting, stop the outcome thread, close the connection."""
        thread = self._thread
        if self._pid == _pid and thread is not None and thread.is_alive():
            self._closing = True
            self._wake.set()  # ends a doze or a linger: the thread commits what is left and ends
            thread.join(timeout=5)
        with self._lock:
            conns, self._conns, self._conn = self._conns, [], None
        for conn in conns:
            with contextlib.suppress(Exception):  # closing anyway
                conn.close()

    # -- leader and followers -----------------------------------------------------------------

    def _submit(self, pending: _Pending) -> bool:
        self._ensure_started()
        self._waiting.append(pending)
        try:
            if self._lead_lock.acquire(blocking=False):  # nobody is committing: lead
                self._lead()
            while True:
                pending.done.acquire()  # released once committed, or to hand this thread the lead
                if not pending.lead:
                    break
                pending.lead = False
                self._lead()
        except BaseException:
            # An exception raised into this thread (none is while a worker claims or records an
            # outcome: the middleware's order sees to that). The lead must not die with it.
            pending.abandoned = True
            if pending.lead:
                pending.lead = False
                self._pass_on()
            raise
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _lead(self) -> None:
        """Holding the lead: commit one group (the callers waiting, then outcomes), pass it on."""
        batch: list[_Pending] = []
        try:
            if self._busy and self.commit_delay > 0:
                time.sleep(self.commit_delay)
            # Only the leader takes from the queues, so a non-empty one stays non-empty here.
            waiting, outcomes, most = self._waiting, self._outcomes, self.max_batch
            while waiting and len(batch) < most:
                batch.append(waiting.popleft())
            while outcomes and len(batch) < most:
                batch.append(outcomes.popleft())
            if batch:
                # Rows in id order: a statement's IN list locks them ascending, as every
                # multi-row UPDATE on job_runs does.
                batch.sort(key=lambda p: p.run_id)
                self._busy = sum(p.kind == CLAIM for p in batch) > 1
                self._commit(batch)
        except BaseException as exc:  # an exception raised into this thread: answer everyone
            for p in batch:
                if not p.settled:
                    p.error = RecorderInterrupted(f"interrupted by {type(exc).__name__}")
                    _settle(p)
            raise
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        """Hand the lead to the first waiting caller, or give it up if nobody waits."""
        waiting = self._waiting
        while True:
            while waiting and waiting[0].abandoned:
                waiting.popleft()  # nobody waits for it: its claim stays PENDING, its finish RUNNING
            if waiting:
                following = waiting[0]
                following.lead = True
                following.done.release()  # it wakes as the leader; the lead lock stays held
                return
            self._lead_lock.release()
            # A caller that queued after the check above found the lock held and waits: lead
            # again to hand it on (unless it, or another, took the lead already).
            if not waiting or not self._lead_lock.acquire(blocking=False):
                return

    def _ensure_started(self) -> None:
        pid = _pid
        thread = self._thread
        if self._pid == pid and thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._pid != pid:  # forked: the parent's threads, locks and connection are not ours
                self._reset()
                self._pid = pid
            if self._thread is None or not self._thread.is_alive():
                self._closing = False
                self._thread = threading.Thread(
                    target=self._outcome_loop, name="tickwork-recorder", daemon=True
                )
                self._thread.start()

    def _outcome_loop(self) -> None:
        """Commit outcomes nobody waits for that no group took within ``finish_linger``."""
        if self._merge:
            self._lead_lock.acquire()
            try:
                self._connection()  # before the first group; a failure is the first group's
            except Exception:  # the first group connects again and reports it
                logger.debug("The recorder could not connect yet.", exc_info=True)
                self._discard()
            finally:
                self._pass_on()
        while not self._closing:
            first = _first(self._outcomes)
            if first is None:
                self._dozing = True
                if not self._outcomes and not self._closing:  # finish_later wakes a doze
                    self._wake.wait()
                self._dozing = False
                self._wake.clear()
                continue
            left = first.queued + self.finish_linger - time.monotonic()
            if left > 0:
                if self._wake.wait(left) and not self._closing:  # close() cuts it short
                    self._wake.clear()  # a finish_later that saw the last doze
            elif self._lead_lock.acquire(timeout=self.finish_linger):
                if _first(self._outcomes) is first:  # no group took it meanwhile
                    self._lead()
                else:
                    self._pass_on()
        while self._outcomes:  # closing: what is left goes now
            self._lead_lock.acquire()
            self._lead()

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
        """One round trip: one ``UPDATE`` per worker for its claims and its finishes together,
        committed by itself (autocommit); several (another worker, or a run both claimed and
        finished) go in one explicit transaction."""
        now = group_time()
        esc = _escaper(conn)
        at = esc(now)
        results = dict.fromkeys(range(len(batch)), False)
        by_worker: dict[str, tuple[list[int], list[int]]] = {}
        seen: set[tuple[str, int]] = set()
        for index, p in enumerate(batch):
            if (p.kind, p.run_id) in seen:
                continue  # a second claim (or finish) of the same run in this group loses
            seen.add((p.kind, p.run_id))
            claims, finishes = by_worker.setdefault(p.worker_id, ([], []))
            (claims if p.kind == CLAIM else finishes).append(index)
        statements: list[tuple[str, list[int]]] = []
        for worker_id, (claims, finishes) in by_worker.items():
            claimed = {batch[i].run_id for i in claims}
            if claimed.isdisjoint(batch[i].run_id for i in finishes):
                parts = [(claims, finishes)]
            else:  # a redelivery claimed while its run is being finished: apart, claims first
                parts = [(claims, []), ([], finishes)]
            for part_claims, part_finishes in parts:
                sql = _update(
                    esc, at, worker_id, [batch[i] for i in part_claims], [batch[i] for i in part_finishes]
                )
                statements.append((sql, part_claims + part_finishes))
        if len(statements) == 1:
            cursor.execute(statements[0][0])
            matched = [cursor.rowcount]
        else:
            cursor.execute(";\n".join(["BEGIN", *(sql for sql, _ in statements), "COMMIT"]))
            matched = []
            for _ in statements:
                cursor.nextset()
                matched.append(cursor.rowcount)
            cursor.nextset()  # the COMMIT's
        for (_sql, members), count in zip(statements, matched, strict=True):
            if count == len(members):
                for i in members:
                    results[i] = True
                continue
            # Some rows were not ours to change: the ones this statement did change carry the
            # group's timestamp (a claim's started_at, a finish's finished_at).
            worker_id = batch[members[0]].worker_id
            ids = ",".join(str(int(batch[i].run_id)) for i in members)
            cursor.execute(
                f"SELECT id, started_at = {at}, finished_at = {at} FROM job_runs"
                f" WHERE id IN ({ids}) AND worker_id = {esc(worker_id)}"
            )
            stamped = {int(row[0]): (bool(row[1]), bool(row[2])) for row in cursor.fetchall()}
            for i in members:
                started, finished = stamped.get(batch[i].run_id, (False, False))
                results[i] = started if batch[i].kind == CLAIM else finished
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
        """The leader's driver connection, opened on first use and kept across groups."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._connect()
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
            # A group is usually one statement, which commits itself: no COMMIT statement.
            autocommit=True,
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        )

    def _discard(self) -> None:
        """Close the connection (after an error): the next group opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            with contextlib.suppress(Exception):  # the connection is being thrown away anyway
                conn.close()


def _settle(pending: _Pending) -> None:
    """Hand a committed claim or finish to its caller: wake it, or call its ``then``."""
    pending.settled = True
    if pending.then is None:
        pending.done.release()
        return
    try:
        # In a fresh context: the callback's log lines carry no fields of the message the
        # leading worker thread is processing (another attempt's ids).
        contextvars.Context().run(pending.then, pending.result, pending.error)
    except Exception:  # the leader must go on with the other callers
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


def _update(
    esc: Callable[[Any], str], at: str, worker_id: str, claims: list[_Pending], finishes: list[_Pending]
) -> str:
    """One worker's claims (PENDING → RUNNING) and finishes (RUNNING → their status, its own
    runs only) as one compare-and-set ``UPDATE``: a row whose id is among the claims gets the
    claim's columns, the others the finish's, and each keeps the rest. A group costs MariaDB
    mostly per statement and per commit, not per row: one autocommitted statement instead of a
    claims ``UPDATE``, a finishes ``UPDATE`` and a ``COMMIT`` cost it 7-9 % less CPU per job in
    groups of 3-6 (``benchmarks/recorder_statements.py``)."""
    worker = esc(worker_id)
    claim_ids = ",".join(str(int(p.run_id)) for p in claims)
    finish_ids = ",".join(str(int(p.run_id)) for p in finishes)

    def claimed(column: str, value: str) -> str:
        """Claims get ``value``; finishes keep ``column``."""
        return f"IF(id IN ({claim_ids}), {value}, {column})" if finishes else value

    def finished(column: str, value: str) -> str:
        """Finishes get ``value``; claims keep ``column``."""
        return f"IF(id IN ({claim_ids}), {column}, {value})" if claims else value

    where: list[str] = []
    sets: list[str] = []
    if claims:
        where.append(f"(id IN ({claim_ids}) AND status = 'PENDING')")
    if finishes:
        where.append(f"(id IN ({finish_ids}) AND status = 'RUNNING' AND worker_id = {worker})")
        outcomes = [(p.run_id, _outcome_values(p)) for p in finishes]
        status = _column_value(esc, "status", [(run_id, o["status"]) for run_id, o in outcomes])
        if claims:
            status = f"IF(id IN ({claim_ids}), 'RUNNING', {status})"
        sets.append(f"status = {status}")
    else:
        sets.append("status = 'RUNNING'")
    if claims:
        sets.append(f"worker_id = {worker}, started_at = {claimed('started_at', at)}")
        message_ids = [(p.run_id, p.message_id) for p in claims]
        message = _column_value(esc, "message_id", message_ids, none_keeps=True)
        if message != "message_id":
            sets.append(f"message_id = {claimed('message_id', message)}")
    if finishes:
        for name in ("output", "http_status", "error", "traceback"):
            value = _column_value(esc, name, [(run_id, o[name]) for run_id, o in outcomes])
            sets.append(f"{name} = {finished(name, value)}")
        sets.append(f"finished_at = {finished('finished_at', at)}")
    sets.append(f"updated_at = {at}")
    return f"UPDATE job_runs SET {', '.join(sets)} WHERE {' OR '.join(where)}"


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


def _first(items: deque[_Pending]) -> _Pending | None:
    """The oldest of ``items`` (another thread may take it meanwhile)."""
    try:
        return items[0]
    except IndexError:
        return None
