"""The store on real MariaDB: migrations from empty, the attempt uniqueness, CAS claims."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import MYSQL_SERVER_URL, SEED, require_service
from tickwork.errors import Conflict, DatabaseNotMigrated
from tickwork.spec import JobSpec
from tickwork.store import RunStatus, ensure_migrated, make_engine, upgrade
from tickwork.store.jobs import create_job
from tickwork.store.models import RunTrigger
from tickwork.store.runs import claim_attempt, finish_attempt, get_run, insert_run, mark_enqueued

pytestmark = pytest.mark.integration


def test_migrations_upgrade_an_empty_database_and_gate_commands() -> None:
    require_service("MariaDB", "127.0.0.1", 3306)
    name = f"tickwork_mig_{uuid.uuid4().hex[:8]}"
    server = create_engine(MYSQL_SERVER_URL, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}`"))
    try:
        url = f"{MYSQL_SERVER_URL}/{name}"
        engine = make_engine(url)
        with pytest.raises(DatabaseNotMigrated, match="tickwork db upgrade"):
            ensure_migrated(engine)
        upgrade(url)
        ensure_migrated(engine)
        insp = inspect(engine)
        assert {"jobs", "job_runs", "alembic_version"} <= set(insp.get_table_names())
        columns = {c["name"]: c for c in insp.get_columns("job_runs")}
        assert getattr(columns["scheduled_for"]["type"], "fsp", None) == 6
        uniques = {u["name"]: u["column_names"] for u in insp.get_unique_constraints("job_runs")}
        assert uniques["uq_job_runs_fire_attempt"] == ["job_id", "scheduled_for", "attempt"]
        assert any(ix["column_names"] == ["next_fire_at"] for ix in insp.get_indexes("jobs"))
        engine.dispose()
    finally:
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


def test_unique_constraint_rejects_a_second_row_for_the_same_attempt(mysql_engine) -> None:
    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    fire = datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
    insert_run(mysql_engine, job_id=job.id, scheduled_for=fire, attempt=1)
    with pytest.raises(IntegrityError):
        insert_run(mysql_engine, job_id=job.id, scheduled_for=fire, attempt=1)
    # The next attempt of the same fire, and the same attempt of another fire, are fine.
    insert_run(mysql_engine, job_id=job.id, scheduled_for=fire, attempt=2)
    insert_run(mysql_engine, job_id=job.id, scheduled_for=fire + timedelta(minutes=1), attempt=1)


def test_insert_run_writes_each_column_of_the_row(mysql_engine) -> None:
    """``insert_run`` executes one prepared ``INSERT`` with the values as parameters (issue 15):
    each column, the defaults and the terminal-status ``finished_at`` are as the statement built
    per run wrote them."""
    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    now = datetime(2026, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)
    fire = now + timedelta(seconds=1)
    later = now + timedelta(seconds=30)
    pending = insert_run(mysql_engine, job_id=job.id, scheduled_for=fire, now=now)
    retry = insert_run(
        mysql_engine, job_id=job.id, scheduled_for=fire, attempt=2, trigger=RunTrigger.RETRY,
        available_at=later, arguments={"args": [1], "kwargs": {"k": "v"}}, now=now,
    )  # fmt: skip
    dead = insert_run(
        mysql_engine, job_id=job.id, scheduled_for=fire, attempt=3, status=RunStatus.DEAD,
        error="boom", now=now,
    )  # fmt: skip
    with mysql_engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text(
                    "SELECT id, job_id, attempt, status, `trigger`, available_at, created_at, updated_at,"
                    " finished_at, error, arguments, JSON_TYPE(arguments) AS arguments_type FROM job_runs"
                )
            )
        }
    naive = now.replace(tzinfo=None)
    a, b, c = rows[pending], rows[retry], rows[dead]
    assert (a.job_id, a.attempt, a.status, a.trigger) == (job.id, 1, "PENDING", "schedule")
    assert a.available_at == a.created_at == a.updated_at == naive  # available at once
    assert a.finished_at is None and a.error is None
    assert a.arguments_type == "NULL"  # no arguments: JSON null, as before the change
    assert (b.attempt, b.trigger, b.available_at) == (2, "retry", later.replace(tzinfo=None))
    assert get_run(mysql_engine, retry).arguments == {"args": [1], "kwargs": {"k": "v"}}
    assert (c.status, c.error, c.finished_at) == ("DEAD", "boom", naive)  # terminal: finished now


def test_microseconds_survive_the_round_trip(mysql_engine) -> None:
    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    fire = datetime(2026, 1, 1, 12, 1, 0, 123456, tzinfo=UTC)
    run_id = insert_run(mysql_engine, job_id=job.id, scheduled_for=fire)
    assert get_run(mysql_engine, run_id).scheduled_for == fire


def test_duplicate_job_name_is_a_conflict_and_writes_nothing(mysql_engine) -> None:
    create_job(mysql_engine, JobSpec.model_validate(SEED))
    with pytest.raises(Conflict, match="test-http"):
        create_job(mysql_engine, JobSpec.model_validate(SEED))
    with mysql_engine.connect() as conn:
        assert conn.scalar(text("SELECT COUNT(*) FROM jobs")) == 1


def test_seed_job_next_fire_is_the_next_whole_minute(mysql_engine) -> None:
    now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    job = create_job(mysql_engine, JobSpec.model_validate(SEED), now=now)
    assert job.next_fire_at == datetime(2026, 1, 1, 12, 1, tzinfo=UTC)


def test_claim_is_compare_and_set(mysql_engine) -> None:
    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    run_id = insert_run(mysql_engine, job_id=job.id, scheduled_for=datetime.now(UTC))
    assert claim_attempt(mysql_engine, run_id, "worker-a")
    assert not claim_attempt(mysql_engine, run_id, "worker-b")
    assert not finish_attempt(mysql_engine, run_id, "worker-b", status=RunStatus.SUCCESS)
    assert finish_attempt(mysql_engine, run_id, "worker-a", status=RunStatus.SUCCESS, output="ok")
    run = get_run(mysql_engine, run_id)
    assert (run.status, run.worker_id, run.output) == ("SUCCESS", "worker-a", "ok")


def test_mark_enqueued_survives_being_the_deadlock_victim(mysql_engine) -> None:
    """Workers claim the rows the scheduler is marking published; InnoDB may pick the mark as
    a deadlock victim, and the publish time must still be recorded (it once stayed NULL)."""
    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ids = [
        insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i)) for i in range(40)
    ]
    first, second, others = ids[0], ids[1], ids[2:]
    blocker = mysql_engine.connect()
    tx = blocker.begin()
    # The blocker locks many rows (so InnoDB picks the smaller mark_enqueued as the victim),
    # the second id among them.
    blocker.execute(
        text("UPDATE job_runs SET worker_id = 'blocker' WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        ),
        {"ids": [second, *others]},
    )
    errors: list[BaseException] = []

    def mark() -> None:
        try:
            mark_enqueued(mysql_engine, [first, second], now=base)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=mark)
    thread.start()
    time.sleep(0.5)  # mark_enqueued holds `first` and waits for `second`
    blocker.execute(text("UPDATE job_runs SET worker_id = 'blocker' WHERE id = :id"), {"id": first})
    tx.commit()
    blocker.close()
    thread.join(timeout=30)
    assert not errors, errors
    with mysql_engine.connect() as conn:
        stamped = conn.scalars(
            text("SELECT enqueued_at FROM job_runs WHERE id IN (:a, :b)"), {"a": first, "b": second}
        ).all()
    assert len(stamped) == 2 and all(v is not None for v in stamped)


def test_recorder_group_commit_gives_each_statement_its_own_result(mysql_engine) -> None:
    """90 claims (three workers racing for each of 30 attempts) are committed in groups by their
    own threads, the lead handed from one to the next (one multi-statement round trip per group):
    every thread returns, exactly one claim per attempt wins, and only the winner can finish it."""
    from tickwork.store.recorder import AttemptRecorder

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ids = [
        insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i)) for i in range(30)
    ]
    recorder = AttemptRecorder(mysql_engine, max_batch=16)
    won: dict[tuple[int, str], bool] = {}
    barrier = threading.Barrier(90)

    def claim(run_id: int, worker: str) -> None:
        barrier.wait()
        won[(run_id, worker)] = recorder.claim(run_id, worker)

    threads = [threading.Thread(target=claim, args=(r, w)) for r in ids for w in ("wa", "wb", "wc")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)  # no caller left waiting for a lead
    try:
        winners = {}
        for run_id in ids:
            claimed = [w for w in ("wa", "wb", "wc") if won[(run_id, w)]]
            assert len(claimed) == 1, (run_id, claimed)
            winners[run_id] = claimed[0]
            assert get_run(mysql_engine, run_id).worker_id == claimed[0]
        for run_id, winner in winners.items():
            loser = next(w for w in ("wa", "wb", "wc") if w != winner)
            assert not recorder.finish(run_id, loser, status=RunStatus.SUCCESS)
            assert recorder.finish(run_id, winner, status=RunStatus.SUCCESS, output="ok")
        assert {get_run(mysql_engine, r).status for r in ids} == {"SUCCESS"}
    finally:
        recorder.close()


def test_recorder_warm_connects_before_the_first_claim_and_survives_a_failed_connect(
    mysql_engine, monkeypatch
) -> None:
    """warm() (RunLog calls it at worker boot) starts the outcome thread, which connects before any
    claim; the first claim uses that connection. A connect failing at warm-up leaves the thread
    running and the first claim connects."""
    from tickwork.store.recorder import AttemptRecorder

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    first, second = (
        insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i)) for i in (0, 1)
    )
    recorder = AttemptRecorder(mysql_engine)
    try:
        recorder.warm()
        deadline = time.monotonic() + 10
        while not recorder._conns and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(recorder._conns) == 1
        warmed = recorder._conns[0]
        assert recorder.claim(first, "wa")
        assert recorder._conns == [warmed]
    finally:
        recorder.close()

    attempts: list[int] = []
    real_connect = AttemptRecorder._connect

    def connect_fails_once(self: AttemptRecorder) -> object:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("database not up yet")
        return real_connect(self)

    monkeypatch.setattr(AttemptRecorder, "_connect", connect_fails_once)
    recorder = AttemptRecorder(mysql_engine)
    try:
        recorder.warm()
        deadline = time.monotonic() + 10
        while not attempts and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder._thread is not None and recorder._thread.is_alive() and recorder._conns == []
        assert recorder.claim(second, "wa")
        assert len(attempts) == 2 and get_run(mysql_engine, second).status == "RUNNING"
    finally:
        recorder.close()


def test_run_log_warms_its_recorder_at_worker_boot(mysql_engine, caplog) -> None:
    """A worker's boot (RunLog.after_worker_boot) opens the recorder's connection; a failure
    there is logged, not raised (the worker still starts; its first claim connects)."""
    from tickwork.middleware.run_log import RunLog

    run_log = RunLog(engine=mysql_engine, worker_id=lambda: "wa")
    try:
        run_log.after_worker_boot(None, None)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while not run_log.recorder._conns and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(run_log.recorder._conns) == 1
    finally:
        run_log.recorder.close()

    def broken() -> None:
        raise RuntimeError("no threads left")

    run_log.recorder.warm = broken  # type: ignore[method-assign]
    run_log.after_worker_boot(None, None)  # type: ignore[arg-type]
    assert "Starting the attempt recorder failed" in caplog.text


def test_recorder_delays_a_commit_only_after_a_group_of_several_claims(mysql_engine, monkeypatch) -> None:
    """The commit delay (fewer, larger transactions under load) never delays a lone claim: it
    applies after a group that held several claims, and stops once groups are single again.
    Claims arriving while a group commits wait, and the first of them leads the next group."""
    from types import SimpleNamespace

    from tickwork.store import recorder as recorder_module
    from tickwork.store.recorder import AttemptRecorder, _Pending

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ids = [
        insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i)) for i in range(6)
    ]
    waits: list[float] = []
    fake_time = SimpleNamespace(sleep=waits.append, monotonic=time.monotonic)
    monkeypatch.setattr(recorder_module, "time", fake_time)
    recorder = AttemptRecorder(mysql_engine, commit_delay=0.25)
    real = recorder._run_group
    entered, gate = threading.Event(), threading.Event()
    groups: list[list[int]] = []
    results: dict[int, bool] = {}

    def held(batch: list[_Pending]) -> list[bool]:
        entered.set()
        gate.wait(30)  # the first group waits until the next three claims are queued
        groups.append([p.run_id for p in batch])
        return real(batch)

    def claim(run_id: int) -> None:
        results[run_id] = recorder.claim(run_id, "w1")

    monkeypatch.setattr(recorder, "_run_group", held)
    try:
        lone = threading.Thread(target=claim, args=(ids[0],))
        lone.start()
        assert entered.wait(30)  # the lone claim's thread leads its group and is held
        queued = [threading.Thread(target=claim, args=(run_id,)) for run_id in ids[1:4]]
        for t in queued:
            t.start()
        deadline = time.monotonic() + 30
        while len(recorder._waiting) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(recorder._waiting) == 3  # queued behind the held group
        gate.set()
        for t in [lone, *queued]:
            t.join(30)
            assert not t.is_alive()
        assert results == dict.fromkeys(ids[:4], True)
        assert groups == [[ids[0]], ids[1:4]] and waits == []  # neither group came after a busy one
        assert recorder.claim(ids[4], "w1")  # after a group of three claims: delayed
        assert waits == [0.25]
        assert recorder.claim(ids[5], "w1")  # after a single claim again: at once
        assert waits == [0.25] and groups[2:] == [[ids[4]], [ids[5]]]
        assert not recorder._lead_lock.locked()  # nobody waits: nobody leads
    finally:
        recorder.close()
    assert {get_run(mysql_engine, r).status for r in ids} == {"RUNNING"}


def test_recorder_commits_a_success_with_the_next_claim_or_after_the_linger(mysql_engine) -> None:
    """Outcomes nobody waits for (successes, ``finish_later``) wait up to ``finish_linger`` for a
    claim and are committed in its group (one commit, so a claim never queues behind a commit of
    outcomes alone); a finish a caller waits for is never held; ``close`` cuts a linger short."""
    from tickwork.store.recorder import AttemptRecorder

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ids = [
        insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i)) for i in range(5)
    ]
    settled: dict[int, tuple[bool, float]] = {}

    def then_for(run_id: int):  # type: ignore[no-untyped-def]
        def then(finished: bool, error: BaseException | None) -> None:
            settled[run_id] = (finished and error is None, time.monotonic())

        return then

    # A long linger: the claim, not the clock, ends it.
    recorder = AttemptRecorder(mysql_engine, finish_linger=60)
    try:
        assert recorder.claim(ids[0], "w1") and recorder.claim(ids[3], "w1")
        recorder.finish_later(ids[0], "w1", then_for(ids[0]), status=RunStatus.SUCCESS)
        assert ids[0] not in settled  # held for a claim
        started = time.monotonic()
        assert recorder.claim(ids[1], "w1")
        assert time.monotonic() - started < 30  # not the 60 s linger
        assert settled[ids[0]][0] is True
        finished_with, claimed = get_run(mysql_engine, ids[0]), get_run(mysql_engine, ids[1])
        assert finished_with.status == RunStatus.SUCCESS and claimed.status == RunStatus.RUNNING
        assert finished_with.finished_at == claimed.started_at  # one group, one commit

        started = time.monotonic()
        assert recorder.finish(ids[3], "w1", status=RunStatus.FAILED, error="boom")  # a waiting caller
        assert time.monotonic() - started < 30

        recorder.finish_later(ids[1], "w1", then_for(ids[1]), status=RunStatus.SUCCESS)
        started = time.monotonic()
    finally:
        recorder.close()  # the end-of-work marker ends the linger; the outcome is written
    assert time.monotonic() - started < 30
    assert settled[ids[1]][0] is True and get_run(mysql_engine, ids[1]).status == RunStatus.SUCCESS

    # Without a claim, the outcome goes alone once the linger is over, not before.
    recorder = AttemptRecorder(mysql_engine, finish_linger=0.3)
    try:
        assert recorder.claim(ids[2], "w1")
        handed = time.monotonic()
        recorder.finish_later(ids[2], "w1", then_for(ids[2]), status=RunStatus.SUCCESS)
        deadline = time.monotonic() + 30
        while ids[2] not in settled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert settled[ids[2]][0] is True
        assert settled[ids[2]][1] - handed >= 0.3
        assert get_run(mysql_engine, ids[2]).status == RunStatus.SUCCESS
    finally:
        recorder.close()


def test_recorder_runs_a_failed_group_again_one_by_one(mysql_engine, monkeypatch) -> None:
    """A group whose transaction fails (here: a deadlock on the merged statement) is run again
    claim by claim; each caller still gets its own answer and only a failing one sees an error."""
    from sqlalchemy.exc import OperationalError

    from tickwork.store.recorder import CLAIM, AttemptRecorder, _Pending

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    first, second = (
        insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i)) for i in range(2)
    )
    recorder = AttemptRecorder(mysql_engine)
    real = recorder._run_group
    groups: list[list[int]] = []

    def flaky(batch: list[_Pending]) -> list[bool]:
        groups.append([p.run_id for p in batch])
        if len(batch) > 1:
            raise OperationalError("UPDATE job_runs", {}, Exception("1213 deadlock"))
        if batch[0].run_id == -1:
            raise RuntimeError("this one is broken")
        return real(batch)

    monkeypatch.setattr(recorder, "_run_group", flaky)
    batch = [_Pending(CLAIM, first, "w1"), _Pending(CLAIM, -1, "w1"), _Pending(CLAIM, second, "w1")]
    try:
        recorder._commit(batch)
    finally:
        recorder.close()
    assert groups == [[first, -1, second], [first], [-1], [second]]
    assert [p.result for p in batch] == [True, False, True]
    assert batch[1].error is not None and batch[0].error is None and batch[2].error is None
    assert {get_run(mysql_engine, r).status for r in (first, second)} == {"RUNNING"}


def test_recorder_merged_group_with_losers_names_the_winners(mysql_engine) -> None:
    """In one group: claims of rows already taken, a duplicate claim of the same row, finishes by
    the wrong worker and different outcomes. The merged statements then match fewer rows than
    they name, and the winners are found by the group's timestamp."""
    from tickwork.store.recorder import CLAIM, FINISH, AttemptRecorder, _Pending

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ids = [
        insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i)) for i in range(6)
    ]
    taken, free, dup, mine_ok, mine_failed, theirs = ids
    assert claim_attempt(mysql_engine, taken, "w-other")
    for run_id in (mine_ok, mine_failed):
        assert claim_attempt(mysql_engine, run_id, "w1")
    assert claim_attempt(mysql_engine, theirs, "w-other")
    batch = [
        _Pending(CLAIM, taken, "w1", message_id="m-taken"),
        _Pending(CLAIM, free, "w1", message_id="m-free"),
        _Pending(CLAIM, dup, "w1", message_id="m-dup-1"),
        _Pending(CLAIM, dup, "w1", message_id="m-dup-2"),
        _Pending(FINISH, mine_ok, "w1", outcome=("SUCCESS", "out", None, None, 200)),
        _Pending(FINISH, mine_failed, "w1", outcome=("FAILED", None, "boom", "tb", None)),
        _Pending(FINISH, theirs, "w1", outcome=("SUCCESS", "out", None, None, 201)),
    ]
    recorder = AttemptRecorder(mysql_engine)
    try:
        recorder._commit(batch)
    finally:
        recorder.close()
    assert [p.result for p in batch] == [False, True, True, False, True, True, False]
    assert all(p.error is None for p in batch)
    rows = {r: get_run(mysql_engine, r) for r in ids}
    assert (rows[taken].worker_id, rows[taken].status) == ("w-other", "RUNNING")
    assert (rows[free].worker_id, rows[free].message_id, rows[free].status) == ("w1", "m-free", "RUNNING")
    assert (rows[dup].message_id, rows[dup].status) == ("m-dup-1", "RUNNING")
    assert (rows[mine_ok].status, rows[mine_ok].output, rows[mine_ok].http_status) == ("SUCCESS", "out", 200)
    assert rows[mine_failed].http_status is None
    assert (rows[mine_failed].status, rows[mine_failed].error, rows[mine_failed].traceback) == (
        "FAILED",
        "boom",
        "tb",
    )
    assert (rows[theirs].status, rows[theirs].worker_id) == ("RUNNING", "w-other")


def test_recorder_writes_a_workers_claims_and_finishes_in_one_statement(mysql_engine) -> None:
    """Claims and finishes of different statuses, outputs, HTTP statuses, errors and tracebacks
    (real jobs return different values) share one autocommitted UPDATE per worker, and each row
    gets its own values, quotes and all; the claimed rows keep theirs."""
    from tickwork.store.recorder import CLAIM, FINISH, AttemptRecorder, _Pending

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ids = [
        insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i)) for i in range(7)
    ]
    *finished, claimed_a, claimed_b = ids
    for run_id in finished:
        assert claim_attempt(mysql_engine, run_id, "w1")
    outcomes = {
        finished[0]: ("SUCCESS", 'it\'s \\ "quoted"', None, None, 200),
        finished[1]: ("SUCCESS", None, None, None, 204),
        finished[2]: ("SUCCESS", "ünïcödé ✓", None, None, None),
        finished[3]: ("FAILED", "partial", "boom", "Traceback 1", 500),
        finished[4]: ("FAILED", None, "bang; DROP TABLE job_runs", "Traceback 2", None),
    }
    with mysql_engine.begin() as c:  # what a claim must leave as it is
        c.execute(
            text(
                "UPDATE job_runs SET output = 'kept', error = 'e', traceback = 't', http_status = 599,"
                " message_id = 'm-before' WHERE id = :id"
            ),
            {"id": claimed_b},
        )
    batch = [
        _Pending(CLAIM, claimed_a, "w1", message_id="m-a"),
        _Pending(CLAIM, claimed_b, "w1", message_id=None),
        *(_Pending(FINISH, run_id, "w1", outcome=outcome) for run_id, outcome in outcomes.items()),
    ]
    recorder = AttemptRecorder(mysql_engine)
    sent: list[str] = []
    conn = recorder._connection()  # the recorder's driver connection: its SQL recorded
    real_cursor = conn.cursor

    class Spy:
        def __init__(self, cursor):
            self._cursor = cursor

        def execute(self, sql, *args):
            sent.append(sql)
            return self._cursor.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._cursor, name)

    conn.cursor = lambda: Spy(real_cursor())
    try:
        recorder._commit(batch)
    finally:
        recorder.close()
    assert [p.result for p in batch] == [True] * len(batch)
    assert len(sent) == 1, sent  # every change went in one round trip, and none lost
    assert sent[0].startswith("UPDATE job_runs") and ";" not in sent[0].replace("; DROP", ""), sent
    for run_id, (status, output, error, traceback, http_status) in outcomes.items():
        row = get_run(mysql_engine, run_id)
        assert (row.status, row.output, row.error, row.traceback, row.http_status) == (
            status,
            output,
            error,
            traceback,
            http_status,
        ), run_id
    assert (get_run(mysql_engine, claimed_a).status, get_run(mysql_engine, claimed_a).message_id) == (
        "RUNNING",
        "m-a",
    )
    b = get_run(mysql_engine, claimed_b)
    assert (b.status, b.worker_id, b.message_id, b.output, b.error, b.traceback, b.http_status) == (
        "RUNNING",
        "w1",
        "m-before",
        "kept",
        "e",
        "t",
        599,
    )
    assert b.started_at is not None and b.finished_at is None
    assert all(get_run(mysql_engine, r).finished_at is not None for r in finished)


def test_recorder_claim_of_a_run_it_finishes_in_the_same_group_loses(mysql_engine) -> None:
    """A redelivered message claimed while its run is being finished by the same worker, in one
    group: the finish is written and the claim loses (it must not run the job a second time)."""
    from tickwork.store.recorder import CLAIM, FINISH, AttemptRecorder, _Pending

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    running, free = (
        insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i)) for i in range(2)
    )
    assert claim_attempt(mysql_engine, running, "w1")
    batch = [
        _Pending(CLAIM, running, "w1", message_id="m-again"),
        _Pending(FINISH, running, "w1", outcome=("SUCCESS", "done", None, None, None)),
        _Pending(CLAIM, free, "w1", message_id="m-free"),
    ]
    recorder = AttemptRecorder(mysql_engine)
    try:
        recorder._commit(batch)
    finally:
        recorder.close()
    assert [p.result for p in batch] == [False, True, True]
    row = get_run(mysql_engine, running)
    assert (row.status, row.output, row.message_id) == ("SUCCESS", "done", None)
    assert get_run(mysql_engine, free).status == "RUNNING"


def test_ids_are_never_reused_after_a_delete(mysql_engine) -> None:
    from tickwork.store.jobs import delete_job

    first = create_job(mysql_engine, JobSpec.model_validate({**SEED, "name": "reuse"}))
    run = insert_run(mysql_engine, job_id=first.id, scheduled_for=datetime(2026, 1, 1, tzinfo=UTC))
    delete_job(mysql_engine, first.id)
    second = create_job(mysql_engine, JobSpec.model_validate({**SEED, "name": "reuse"}))
    assert second.id > first.id
    assert insert_run(mysql_engine, job_id=second.id, scheduled_for=datetime(2026, 1, 1, tzinfo=UTC)) > run


def _run_message(run_id: int, job_id: int) -> object:
    from types import SimpleNamespace

    from tickwork.messaging import OPTION

    options = {"run_id": run_id, "job_id": job_id, "attempt": 1, "job_name": "seed"}
    return SimpleNamespace(options={OPTION: options}, message_id=f"m-{run_id}", actor_name="seed")


def test_run_log_success_is_written_after_the_thread_moves_on_and_stays_in_flight_until_then(
    mysql_engine, monkeypatch
) -> None:
    """A success's outcome goes to the recorder without holding the worker thread: until it is
    committed the run stays RUNNING and in this process's in-flight list (so the reaper leaves
    it alone), and ``flush`` (what a worker shutdown calls) waits for it."""
    from tickwork.middleware.attempt import current_attempt, in_flight_runs
    from tickwork.middleware.run_log import RunLog

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    run_id = insert_run(mysql_engine, job_id=job.id, scheduled_for=datetime(2026, 1, 1, 12, tzinfo=UTC))
    run_log = RunLog(engine=mysql_engine, worker_id=lambda: "w-async")
    message = _run_message(run_id, job.id)
    try:
        run_log.before_process_message(None, message)  # type: ignore[arg-type]
        assert get_run(mysql_engine, run_id).status == RunStatus.RUNNING
        gate = threading.Event()
        real = run_log.recorder._run_group

        def gated(batch):  # type: ignore[no-untyped-def]
            assert gate.wait(60), "the test never opened the gate"
            return real(batch)

        monkeypatch.setattr(run_log.recorder, "_run_group", gated)
        attempt = current_attempt()
        assert attempt is not None
        attempt.result = {"ok": 1}
        run_log.after_process_message(None, message)  # type: ignore[arg-type]
        # Returned with the outcome not yet written: still RUNNING, still in flight.
        assert get_run(mysql_engine, run_id).status == RunStatus.RUNNING
        assert run_id in in_flight_runs()
        assert not run_log.flush(timeout=0.2)  # cannot finish: its commit is held at the gate
        gate.set()
        assert run_log.flush(timeout=60)
        run = get_run(mysql_engine, run_id)
        assert (run.status, run.output, run.worker_id) == (RunStatus.SUCCESS, '{"ok": 1}', "w-async")
        assert run_id not in in_flight_runs()
    finally:
        run_log.recorder.close()


def test_run_log_success_whose_write_fails_is_written_by_the_fallback(mysql_engine, monkeypatch) -> None:
    """The database drops the outcome's group (and its one-by-one retry) with 'server has gone
    away': the fallback thread writes it once the database answers, before ``flush`` returns."""
    import pymysql

    from tickwork.middleware.attempt import in_flight_runs
    from tickwork.middleware.run_log import RunLog

    job = create_job(mysql_engine, JobSpec.model_validate(SEED))
    run_id = insert_run(mysql_engine, job_id=job.id, scheduled_for=datetime(2026, 1, 1, 13, tzinfo=UTC))
    run_log = RunLog(engine=mysql_engine, worker_id=lambda: "w-fallback")
    message = _run_message(run_id, job.id)
    try:
        run_log.before_process_message(None, message)  # type: ignore[arg-type]
        real = run_log.recorder._run_group
        failures = {"left": 3}  # the group, its one-by-one retry, the fallback's first try

        def flaky(batch):  # type: ignore[no-untyped-def]
            if failures["left"] > 0:
                failures["left"] -= 1
                raise pymysql.err.OperationalError(2006, "MySQL server has gone away")
            return real(batch)

        monkeypatch.setattr(run_log.recorder, "_run_group", flaky)
        run_log.after_process_message(None, message)  # type: ignore[arg-type]
        assert run_log.flush(timeout=60)
        assert failures["left"] == 0
        assert get_run(mysql_engine, run_id).status == RunStatus.SUCCESS
        assert run_id not in in_flight_runs()
    finally:
        run_log.recorder.close()
