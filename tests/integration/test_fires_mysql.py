"""fires.py on real MariaDB: claim, CAS, misfire and overlap policies, one-time, pause/resume."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from tickwork.spec import JobSpec
from tickwork.store.engine import make_engine
from tickwork.store.fires import (
    _advance,
    _claim_due,
    earliest_next_fire,
    fire_due_jobs,
    fire_due_jobs_safely,
    pending_unclaimed,
    prune_runs,
)
from tickwork.store.jobs import create_job, get_job, set_enabled
from tickwork.store.models import RunStatus, jobs_table, runs_table
from tickwork.store.runs import insert_run, mark_enqueued

pytestmark = pytest.mark.integration

BASE = datetime(2030, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)


def make_job(engine: Engine, name: str, cron: str | None = "* * * * * *", **fields: Any) -> int:
    spec = JobSpec(
        name=name, cron_expression=cron, handler_type="python", handler_data="tests.noop", **fields
    )
    return create_job(engine, spec, now=fields.pop("now", BASE) if "now" in fields else BASE).id


def runs(engine: Engine, job_id: int | None = None) -> list[Any]:
    query = select(runs_table).order_by(runs_table.c.scheduled_for)
    if job_id is not None:
        query = query.where(runs_table.c.job_id == job_id)
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def statuses(engine: Engine, job_id: int) -> Counter[str]:
    return Counter(r["status"] for r in runs(engine, job_id))


def test_on_time_fires_each_second_once(mysql_engine: Engine) -> None:
    job_id = make_job(mysql_engine, "every-second")
    assert fire_due_jobs(mysql_engine, now=BASE).claimed_jobs == 0  # next fire is BASE+0.5s
    result = fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=3))
    assert [a.scheduled_for for a in result.to_publish] == [
        datetime(2030, 1, 1, 0, 0, s, tzinfo=UTC) for s in (1, 2, 3)
    ]
    assert all(a.job.id == job_id for a in result.to_publish)
    job = get_job(mysql_engine, job_id)
    assert job.next_fire_at == datetime(2030, 1, 1, 0, 0, 4, tzinfo=UTC)
    assert job.last_fire_at == datetime(2030, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert statuses(mysql_engine, job_id) == {"PENDING": 3}
    assert earliest_next_fire(mysql_engine) == job.next_fire_at


def test_two_leaders_never_double_fire(mysql_database: str, mysql_engine: Engine) -> None:
    ids = [make_job(mysql_engine, f"race-{i}") for i in range(20)]
    errors: list[BaseException] = []
    made: list[int] = []

    def leader() -> None:
        engine = make_engine(mysql_database)
        try:
            for step in range(1, 41):
                result = fire_due_jobs_safely(engine, now=BASE + step * timedelta(milliseconds=250))
                made.append(len(result.to_publish))
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=leader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    rows = runs(mysql_engine)
    keys = Counter((r["job_id"], r["scheduled_for"]) for r in rows)
    assert max(keys.values()) == 1
    expected = {(j, datetime(2030, 1, 1, 0, 0, s, tzinfo=UTC)) for j in ids for s in range(1, 11)}
    assert set(keys) == expected
    assert sum(made) == len(expected)


def test_cas_refuses_a_stale_snapshot(mysql_engine: Engine) -> None:
    job_id = make_job(mysql_engine, "cas")
    now = BASE + timedelta(seconds=2)
    with mysql_engine.connect() as conn:
        stale = _claim_due(conn, now, 10, None)
        conn.rollback()
    fire_due_jobs(mysql_engine, now=now)  # another leader fires first
    from tickwork.scheduler.policy import plan_fires

    row = stale[0]
    plan = plan_fires(
        cron_expression=row["cron_expression"],
        timezone="UTC",
        run_at=None,
        next_fire_at=row["next_fire_at"],
        now=now,
        misfire_policy="fire_once",
        grace_seconds=60,
        fire_all_limit=10,
    )
    with mysql_engine.begin() as conn:
        assert _advance(conn, stale, {job_id: plan}, now) == set()
    assert statuses(mysql_engine, job_id) == {"PENDING": 2}


@pytest.mark.parametrize(
    ("policy", "limit", "expected"),
    [
        ("fire_once", 100, {"PENDING": 1, "MISSED": 9}),
        ("fire_all", 3, {"PENDING": 3, "MISSED": 7}),
        ("fire_all", 100, {"PENDING": 10}),
        ("skip", 100, {"SKIPPED": 10}),
    ],
)
def test_misfire_policies_after_downtime(
    mysql_engine: Engine, policy: str, limit: int, expected: dict[str, int]
) -> None:
    job_id = make_job(
        mysql_engine, f"minutely-{policy}", "0 * * * * *", misfire_policy=policy, misfire_grace_seconds=5
    )
    # No scheduler ran for 10.5 minutes: fires at 00:01 … 00:10 are all older than the grace.
    now = datetime(2030, 1, 1, 0, 10, 30, tzinfo=UTC)
    result = fire_due_jobs(mysql_engine, now=now, fire_all_limit=limit)
    assert statuses(mysql_engine, job_id) == expected
    rows = runs(mysql_engine, job_id)
    running = [r for r in rows if r["status"] == "PENDING"]
    assert len(result.to_publish) == len(running)
    assert all(r["trigger"] == "misfire" for r in rows)
    if policy == "fire_once":  # the catch-up is the oldest missed fire
        assert running[0]["scheduled_for"] == datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    assert get_job(mysql_engine, job_id).next_fire_at == datetime(2030, 1, 1, 0, 11, tzinfo=UTC)


def test_fire_once_with_on_time_fires_misses_only_the_late_ones(mysql_engine: Engine) -> None:
    job_id = make_job(mysql_engine, "ten-seconds", "*/10 * * * * *", misfire_grace_seconds=30)
    now = datetime(2030, 1, 1, 0, 2, 0, tzinfo=UTC)
    fire_due_jobs(mysql_engine, now=now)
    rows = runs(mysql_engine, job_id)
    on_time = [r for r in rows if r["status"] == "PENDING"]
    assert [r["scheduled_for"].second for r in on_time] == [30, 40, 50, 0]
    assert all(r["trigger"] == "schedule" for r in on_time)
    assert Counter(r["status"] for r in rows) == {"PENDING": 4, "MISSED": 8}


def test_overlap_forbid_records_skipped(mysql_engine: Engine) -> None:
    job_id = make_job(mysql_engine, "forbid", overlap_policy="forbid")
    fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=3))
    assert statuses(mysql_engine, job_id) == {"PENDING": 1, "SKIPPED": 2}
    fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=5))  # the first run is still active
    assert statuses(mysql_engine, job_id) == {"PENDING": 1, "SKIPPED": 4}
    with mysql_engine.begin() as conn:
        conn.execute(update(runs_table).where(runs_table.c.status == "PENDING").values(status="SUCCESS"))
    result = fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=6))
    assert len(result.to_publish) == 1
    skipped = [r for r in runs(mysql_engine, job_id) if r["status"] == "SKIPPED"]
    assert all("forbid" in r["error"] for r in skipped)


def test_overlap_replace_supersedes_unclaimed(mysql_engine: Engine) -> None:
    job_id = make_job(mysql_engine, "replace", overlap_policy="replace")
    fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=1))
    result = fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=3))
    assert [a.scheduled_for.second for a in result.to_publish] == [3]
    assert statuses(mysql_engine, job_id) == {"PENDING": 1, "SKIPPED": 2}


def test_one_time_job_fires_once(mysql_engine: Engine) -> None:
    job_id = make_job(mysql_engine, "once", None, run_at=BASE + timedelta(seconds=2))
    assert not fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=1)).to_publish
    assert len(fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=3)).to_publish) == 1
    assert get_job(mysql_engine, job_id).next_fire_at is None
    assert not fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=30)).to_publish
    assert statuses(mysql_engine, job_id) == {"PENDING": 1}


def test_paused_job_makes_no_fires_and_resume_fires_from_the_resume_on(mysql_engine: Engine) -> None:
    """The misfire window starts when the job was last enabled (issue 9): the paused time is
    neither caught up nor recorded MISSED."""
    job_id = make_job(mysql_engine, "paused", "*/10 * * * * *", misfire_grace_seconds=30)
    set_enabled(mysql_engine, job_id, False, now=BASE)
    assert fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=100)).claimed_jobs == 0
    assert statuses(mysql_engine, job_id) == {}
    set_enabled(mysql_engine, job_id, True, now=BASE + timedelta(seconds=165))
    fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=190))
    # Resumed at 00:02:45.5: its first fire is 2:50; at 00:03:10.5 the fires at 2:50, 3:00 and
    # 3:10 are within the 30 s grace and made; 0:00 ... 2:40, while it was paused, are not
    # recorded at all (before issue 9 each was a MISSED row).
    assert statuses(mysql_engine, job_id) == {"PENDING": 3}


def test_pending_unclaimed_takes_never_published_rows_before_a_backlog(mysql_engine: Engine) -> None:
    """1,200 published, unclaimed rows (a backlog) due before 3 never-published ones: one pass
    (limit 1,000) returns the 3 first, then the oldest published ones, none twice; rows still
    within their grace, claimed rows and a deleted job's rows are not returned."""
    from tickwork.store.jobs import delete_job

    job_id = make_job(mysql_engine, "backlog", None)
    gone = make_job(mysql_engine, "deleted-later", None)

    def rows(job: int, n: int, *, due: datetime, enqueued: datetime | None, status: str = "PENDING") -> None:
        with mysql_engine.begin() as conn:
            conn.execute(
                runs_table.insert(),
                [
                    {"job_id": job, "scheduled_for": due + timedelta(microseconds=i), "attempt": 1,
                     "status": status, "trigger": "schedule", "available_at": due, "enqueued_at": enqueued,
                     "created_at": due, "updated_at": due}
                    for i in range(n)
                ],
            )  # fmt: skip

    now = BASE + timedelta(seconds=100)
    rows(job_id, 1200, due=BASE, enqueued=BASE + timedelta(seconds=1))
    rows(job_id, 5, due=BASE - timedelta(seconds=1), enqueued=BASE, status="RUNNING")
    rows(job_id, 3, due=BASE + timedelta(seconds=50), enqueued=None)
    rows(job_id, 4, due=BASE + timedelta(seconds=99), enqueued=None)  # within the 5 s grace
    rows(job_id, 6, due=BASE + timedelta(seconds=80), enqueued=BASE + timedelta(seconds=80))  # within 30 s
    rows(gone, 2, due=BASE + timedelta(seconds=40), enqueued=None)
    delete_job(mysql_engine, gone)
    stale = pending_unclaimed(mysql_engine, grace_seconds=30, unpublished_grace_seconds=5, now=now)
    assert len(stale) == 1000 and len({a.run_id for a in stale}) == 1000
    assert [a.enqueued_at for a in stale[:3]] == [None, None, None]
    assert {a.enqueued_at for a in stale[3:]} == {BASE + timedelta(seconds=1)}
    assert {a.job.name for a in stale} == {"backlog"}
    everything = pending_unclaimed(
        mysql_engine, grace_seconds=30, unpublished_grace_seconds=5, now=now, limit=5000
    )
    assert len(everything) == 1203


def test_pending_unclaimed_and_prune(mysql_engine: Engine) -> None:
    job_id = make_job(mysql_engine, "outbox")
    result = fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=2))
    later = BASE + timedelta(seconds=100)
    stale = pending_unclaimed(mysql_engine, grace_seconds=30, now=later)
    assert sorted(a.run_id for a in stale) == sorted(a.run_id for a in result.to_publish)
    assert stale[0].job.handler_data == "tests.noop"
    mark_enqueued(mysql_engine, [a.run_id for a in stale], now=later)
    assert pending_unclaimed(mysql_engine, grace_seconds=30, now=later + timedelta(seconds=10)) == []
    assert len(pending_unclaimed(mysql_engine, grace_seconds=30, now=later + timedelta(seconds=31))) == 2
    old = BASE - timedelta(days=40)
    for i in range(25):
        insert_run(
            mysql_engine,
            job_id=job_id,
            scheduled_for=old + timedelta(seconds=i),
            status=RunStatus.SUCCESS,
            now=old,
        )
    batches: list[int] = []

    def count_batch() -> bool:
        batches.append(len(batches))
        return True

    assert (
        prune_runs(mysql_engine, older_than=BASE - timedelta(days=30), batch_size=10, keep_going=count_batch)
        == 25
    )
    assert len(batches) == 3  # 10 + 10 + 5 rows, one transaction each
    assert statuses(mysql_engine, job_id) == {"PENDING": 2}


def test_prune_stops_when_the_lease_is_lost_and_continues_later(mysql_engine: Engine) -> None:
    job_id = make_job(mysql_engine, "pruned")
    old = BASE - timedelta(days=90)
    with mysql_engine.begin() as conn:
        conn.execute(
            runs_table.insert(),
            [
                {"job_id": job_id, "scheduled_for": old + timedelta(seconds=i), "attempt": 1,
                 "status": "SUCCESS", "trigger": "schedule", "available_at": old,
                 "created_at": old, "updated_at": old}
                for i in range(2500)
            ],
        )  # fmt: skip
    leading = iter([True, False])
    cutoff = BASE - timedelta(days=30)
    assert prune_runs(mysql_engine, older_than=cutoff, keep_going=lambda: next(leading)) == 1000
    assert prune_runs(mysql_engine, older_than=cutoff) == 1500  # the next sweep finishes the job
    assert runs(mysql_engine, job_id) == []


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        ("Europe/Berlin", datetime(2030, 3, 31, tzinfo=UTC), datetime(2030, 10, 27, tzinfo=UTC)),
        ("America/New_York", datetime(2030, 3, 10, tzinfo=UTC), datetime(2030, 11, 3, tzinfo=UTC)),
    ],
)
def test_daily_0230_across_dst_transitions(
    mysql_engine: Engine, zone: str, spring: datetime, autumn: datetime
) -> None:
    """A daily 02:30 job fires exactly once per local day across both transitions (fake clock)."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)
    for transition in (spring, autumn):
        with mysql_engine.begin() as conn:
            conn.execute(runs_table.delete())
            conn.execute(jobs_table.delete())
        start = transition - timedelta(days=3)
        spec = JobSpec(
            name="dst",
            cron_expression="30 2 * * *",
            timezone=zone,
            handler_type="python",
            handler_data="tests.noop",
        )
        job_id = create_job(mysql_engine, spec, now=start).id
        clock = start
        while clock < transition + timedelta(days=3):
            clock += timedelta(minutes=10)
            fire_due_jobs(mysql_engine, now=clock)
        fired = [r["scheduled_for"] for r in runs(mysql_engine, job_id)]
        assert all(
            r["status"] == "PENDING" and r["trigger"] == "schedule" for r in runs(mysql_engine, job_id)
        )
        local_days = [f.astimezone(tz).date() for f in fired]
        assert len(fired) == 6 and len(set(local_days)) == 6, fired
        for f in fired:
            local = f.astimezone(tz)
            # 02:30 exists on every day but the spring one, which fires at 03:00 (end of the gap).
            assert (local.hour, local.minute) in ((2, 30), (3, 0))


def test_an_existing_fire_row_does_not_stall_other_jobs(mysql_engine: Engine) -> None:
    taken = make_job(mysql_engine, "taken")
    other = make_job(mysql_engine, "other")
    # A row for taken's fire at BASE+1s already exists (made by someone else).
    insert_run(mysql_engine, job_id=taken, scheduled_for=datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC))
    with pytest.raises(IntegrityError):
        fire_due_jobs(mysql_engine, now=BASE + timedelta(seconds=1))
    result = fire_due_jobs_safely(mysql_engine, now=BASE + timedelta(seconds=1))
    assert [a.job.id for a in result.to_publish] == [other]
    assert statuses(mysql_engine, taken) == {"PENDING": 1} and statuses(mysql_engine, other) == {"PENDING": 1}
    assert get_job(mysql_engine, taken).next_fire_at == datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC)


def test_an_existing_fire_row_does_not_swallow_the_fires_after_it(mysql_engine: Engine) -> None:
    """A job handled late whose first due fire was already recorded still makes every later fire
    (each exactly once), instead of jumping past them without a trace."""
    job_id = make_job(mysql_engine, "late")
    first = datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC)
    insert_run(mysql_engine, job_id=job_id, scheduled_for=first)
    result = fire_due_jobs_safely(mysql_engine, now=BASE + timedelta(seconds=10))
    expected = [first + timedelta(seconds=n) for n in range(1, 10)]
    assert [a.scheduled_for for a in result.to_publish] == expected
    assert [r["scheduled_for"] for r in runs(mysql_engine, job_id)] == [first, *expected]
    assert get_job(mysql_engine, job_id).next_fire_at == first + timedelta(seconds=10)
