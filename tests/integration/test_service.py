"""SchedulerService on real MariaDB, Redis and RabbitMQ: precise fires, outbox after a crash."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import pytest
from sqlalchemy import Engine, select

from tests.worker_helpers import wait_for
from tickwork.config import Settings
from tickwork.messaging import make_broker, queue_name
from tickwork.scheduler.service import SchedulerService
from tickwork.scheduler.wake import wake_schedulers
from tickwork.spec import JobSpec
from tickwork.store.fires import fire_due_jobs
from tickwork.store.jobs import create_job
from tickwork.store.models import runs_table

pytestmark = pytest.mark.integration


def drain(settings: Settings, queue: str = "default") -> list[dict[str, Any]]:
    conn = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    channel = conn.channel()
    channel.queue_declare(
        queue_name(settings, queue),
        durable=True,
        passive=False,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue_name(settings, queue) + ".XQ",
        },
    )
    bodies = []
    while True:
        method, _props, body = channel.basic_get(queue_name(settings, queue), auto_ack=True)
        if method is None:
            break
        bodies.append(json.loads(body))
    conn.close()
    return bodies


def job_spec(name: str, **fields: Any) -> JobSpec:
    return JobSpec(name=name, handler_type="python", handler_data="tests.noop", **fields)


def test_crash_between_commit_and_publish_loses_nothing(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    settings = cluster_settings.model_copy(update={"outbox_grace_seconds": 0.5})
    job = create_job(mysql_engine, job_spec("crashy", cron_expression="* * * * * *"))
    time.sleep(2.1)
    # The "crashed" leader: committed the fires, published nothing.
    committed = fire_due_jobs(mysql_engine)
    assert len(committed.to_publish) >= 2
    broker = make_broker(settings)
    service = SchedulerService(settings, engine=mysql_engine, broker=broker)
    try:
        assert service.lease.try_acquire()
        time.sleep(0.6)
        assert service.sweep_outbox() >= len(committed.to_publish)
    finally:
        service.lease.release()
        broker.close()
    run_ids = {m["options"]["tickwork"]["run_id"] for m in drain(settings)}
    assert {a.run_id for a in committed.to_publish} <= run_ids
    with mysql_engine.connect() as conn:
        enqueued = conn.execute(
            select(runs_table.c.enqueued_at).where(
                runs_table.c.job_id == job.id, runs_table.c.id.in_(run_ids)
            )
        ).all()
    assert all(row[0] is not None for row in enqueued)


def test_service_fires_on_time_and_wakes_on_notice(
    cluster_settings: Settings, mysql_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An idle poll of 60 s: without the notice the one-shot fire would be found ~59 s late (and
    # the wait below would time out), so the bound on its lag can leave room for a busy machine.
    monkeypatch.setattr("tickwork.scheduler.ticker.IDLE_POLL_SECONDS", 60.0)
    service = SchedulerService(cluster_settings, engine=mysql_engine)
    service.start()
    try:
        deadline = time.monotonic() + 5
        while not service.is_leader and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.is_leader
        time.sleep(0.3)  # the ticker has gone idle (no jobs)
        due = datetime.now(UTC) + timedelta(seconds=1.2)
        create_job(mysql_engine, job_spec("one-shot", run_at=due))
        assert wake_schedulers(cluster_settings, "created")

        def published() -> Any:
            with mysql_engine.connect() as conn:
                return (
                    conn.execute(select(runs_table).where(runs_table.c.enqueued_at.is_not(None)))
                    .mappings()
                    .first()
                )

        wait_for(published, timeout=15, what="the one-shot fire published")
    finally:
        service.shutdown()
    with mysql_engine.connect() as conn:
        row = conn.execute(select(runs_table)).mappings().one()
    lag = (row["enqueued_at"] - row["scheduled_for"]).total_seconds()
    # Woken by the notice, the fire goes out at its instant; 5 s leaves room for a busy machine
    # (CI saw 0.97 s) and is far below the 59 s it would be late without the notice.
    assert row["status"] == "PENDING" and 0 <= lag < 5, lag
    messages = drain(cluster_settings)
    assert [m["options"]["tickwork"]["run_id"] for m in messages] == [row["id"]]


def test_retention_prunes_only_as_leader_and_only_old_finished_rows(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    from tickwork.store.runs import insert_run

    settings = cluster_settings.model_copy(update={"retention_days": 7})
    job = create_job(mysql_engine, job_spec("retained", cron_expression="0 0 * * * *"))
    old = datetime.now(UTC) - timedelta(days=8)
    recent = datetime.now(UTC) - timedelta(days=6)
    for i, (created, status) in enumerate(
        [(old, "SUCCESS"), (old, "DEAD"), (old, "PENDING"), (recent, "SUCCESS")]
    ):
        insert_run(
            mysql_engine, job_id=job.id, scheduled_for=old + timedelta(seconds=i), status=status, now=created
        )
    broker = make_broker(settings)
    service = SchedulerService(settings, engine=mysql_engine, broker=broker)
    try:
        assert service.prune_retention() == 0  # a standby prunes nothing
        assert service.lease.try_acquire()
        assert service.prune_retention() == 2
    finally:
        service.lease.release()
        broker.close()
    with mysql_engine.connect() as conn:
        left = sorted(conn.execute(select(runs_table.c.status)).scalars())
    assert left == ["PENDING", "SUCCESS"]


def test_outbox_sweep_does_not_republish_a_backlog_but_does_republish_lost_messages(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    """Published attempts waiting behind a queue backlog are left alone (republishing them every
    grace period piles up duplicates); once the queue is empty, still-PENDING ones were lost and
    are republished. Never-published ones go out regardless."""
    from tickwork.messaging import build_message, publish
    from tickwork.store.runs import insert_run, mark_enqueued

    settings = cluster_settings.model_copy(update={"outbox_grace_seconds": 0.5})
    job = create_job(mysql_engine, job_spec("backlogged", cron_expression="0 0 0 1 1 *"))
    past = datetime.now(UTC) - timedelta(seconds=10)
    published = [
        insert_run(mysql_engine, job_id=job.id, scheduled_for=past + timedelta(seconds=i), now=past)
        for i in range(3)
    ]
    never = insert_run(mysql_engine, job_id=job.id, scheduled_for=past + timedelta(seconds=5), now=past)
    broker = make_broker(settings)
    service = SchedulerService(settings, engine=mysql_engine, broker=broker)
    try:
        publish(
            broker, [build_message(settings, job, run_id=r, attempt=1, scheduled_for=past) for r in published]
        )
        mark_enqueued(mysql_engine, published, now=datetime.now(UTC) - timedelta(seconds=1))
        assert service.lease.try_acquire()
        assert service.sweep_outbox() == 1  # the never-published one only: the 3 wait in the queue
        assert service.sweep_outbox() == 0
        # Behind a backlog for 10 grace periods, they count as lost after all (the queue may never
        # empty): republished once, and their clock starts again.
        mark_enqueued(mysql_engine, published[:1], now=datetime.now(UTC) - timedelta(seconds=5.5))
        assert service.sweep_outbox() == 1
        assert service.sweep_outbox() == 0
        waiting = drain(settings)  # a consumer took them ... and lost them (rows still PENDING)
        assert sorted(m["options"]["tickwork"]["run_id"] for m in waiting) == sorted(
            [*published, published[0], never]
        )
        time.sleep(0.6)
        assert service.sweep_outbox() == 4  # all four were lost by that consumer
    finally:
        service.lease.release()
        broker.close()
    assert sorted(m["options"]["tickwork"]["run_id"] for m in drain(settings)) == sorted([*published, never])


def test_outbox_sweep_publishes_a_backfill_in_chunks_each_once(
    cluster_settings: Settings, mysql_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14's pacing: the sweep publishes at most OUTBOX_CHUNK at a time, makes room for the
    ticker before each chunk, and every backfilled fire goes out exactly once."""
    from tickwork.backfill import backfill
    from tickwork.scheduler import sweeps

    monkeypatch.setattr(sweeps, "OUTBOX_CHUNK", 2)
    settings = cluster_settings.model_copy(
        update={"outbox_grace_seconds": 0.01, "backfill_fires_per_second": 1e9}
    )
    job = create_job(mysql_engine, job_spec("filled", cron_expression="* * * * * *", enabled=False))
    end = datetime.now(UTC).replace(microsecond=0)
    result = backfill(settings, mysql_engine, job, end - timedelta(seconds=7), end)
    assert result.fires == 7
    broker = make_broker(settings)
    chunks: list[int] = []
    order: list[str] = []
    published = 0
    try:

        def publish(attempts: list[Any]) -> int:
            chunks.append(len(attempts))
            order.append("chunk")
            return service.publish_attempts(attempts)

        service = SchedulerService(settings, engine=mysql_engine, broker=broker)
        deadline = time.monotonic() + 30
        while published < 7 and time.monotonic() < deadline:
            published += sweeps.sweep_outbox(
                settings,
                mysql_engine,
                broker,
                publish=publish,
                is_leader=lambda: True,
                make_room=lambda: order.append("room"),
            )
    finally:
        broker.close()
    assert published == 7
    assert chunks and max(chunks) <= 2 and sum(chunks) == 7
    # Room made right before each chunk (before the sweep's query for a sweep's first chunk).
    assert all(order[i - 1] == "room" for i, step in enumerate(order) if step == "chunk")
    with mysql_engine.connect() as conn:
        mine = {r for (r,) in conn.execute(select(runs_table.c.id).where(runs_table.c.job_id == job.id))}
    run_ids = [m["options"]["tickwork"]["run_id"] for m in drain(settings)]
    assert sorted(run_ids) == sorted(mine)  # each once, none other


def test_retention_deletes_only_in_the_gaps_between_the_tickers_fires(
    cluster_settings: Settings, mysql_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each retention batch waits for a gap between ticks (as the outbox sweep's chunks do):
    while a tick runs, nothing is deleted; once it ends, the old rows go."""
    from tickwork.scheduler import service as service_module
    from tickwork.store.runs import insert_run

    monkeypatch.setattr(service_module, "SWEEP_YIELD_MAX_SECONDS", 600.0)
    settings = cluster_settings.model_copy(update={"retention_days": 7})
    job = create_job(mysql_engine, job_spec("pruned-in-gaps", cron_expression="0 0 * * * *"))
    old = datetime.now(UTC) - timedelta(days=8)
    for i in range(3):
        insert_run(
            mysql_engine, job_id=job.id, scheduled_for=old + timedelta(seconds=i), status="SUCCESS", now=old
        )

    def left() -> int:
        with mysql_engine.connect() as conn:
            return len(conn.execute(select(runs_table.c.id)).all())

    broker = make_broker(settings)
    service = SchedulerService(settings, engine=mysql_engine, broker=broker)
    waiting = threading.Event()
    make_room = service.make_room

    def noted_make_room() -> float:
        waiting.set()
        return make_room()

    monkeypatch.setattr(service, "make_room", noted_make_room)
    pruned: list[int] = []
    try:
        assert service.lease.try_acquire()
        service.ticker._lock.acquire()  # a tick is running
        sweep = threading.Thread(target=lambda: pruned.append(service.prune_retention()), daemon=True)
        sweep.start()
        assert waiting.wait(30), "the retention sweep did not wait for a gap"
        assert left() == 3  # waiting for the tick to end (up to 600 s here): nothing deleted
        service.ticker._lock.release()
        sweep.join(30)
        assert not sweep.is_alive()
    finally:
        if service.ticker._lock.locked():
            service.ticker._lock.release()
        service.lease.release()
        broker.close()
    assert pruned == [3] and left() == 0


def test_make_room_waits_while_the_ticker_fires(
    cluster_settings: Settings, mysql_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox sweep's chunks wait for the ticker's tick to end (bounded, see the constants)."""
    from tickwork.scheduler import service as service_module

    monkeypatch.setattr(service_module, "SWEEP_YIELD_MAX_SECONDS", 600.0)
    monkeypatch.setattr(service_module, "SWEEP_GUARD_SECONDS", 60.0)
    broker = make_broker(cluster_settings)
    service = SchedulerService(cluster_settings, engine=mysql_engine, broker=broker)
    returned = threading.Event()
    try:
        service.ticker._lock.acquire()  # a tick is running
        waiter = threading.Thread(target=lambda: (service.make_room(), returned.set()), daemon=True)
        waiter.start()
        assert not returned.wait(0.3)  # still waiting: the tick has not ended
        # The tick ends with the next one imminent (within the guard, widened to 60 s here).
        service.ticker.next_wake = datetime.now(UTC) + timedelta(seconds=30)
        service.ticker._lock.release()
        assert not returned.wait(0.3)  # still waiting: the next tick is near
        service.ticker.next_wake = None  # nothing armed any more
        assert returned.wait(30)
        waiter.join(30)
    finally:
        if service.ticker._lock.locked():
            service.ticker._lock.release()
        broker.close()
    assert service.ticker.seconds_to_next_tick() is None


def test_a_stopping_service_ends_its_outbox_sweep_between_chunks(
    cluster_settings: Settings, mysql_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shutdown waits for the service's jobs and releases the lease after them: a sweep that
    went on while leading (a large outbox) held a SIGTERMed scheduler past 30 s."""
    from tickwork.backfill import backfill
    from tickwork.scheduler import sweeps

    monkeypatch.setattr(sweeps, "OUTBOX_CHUNK", 2)
    settings = cluster_settings.model_copy(
        update={"outbox_grace_seconds": 0.01, "backfill_fires_per_second": 1e9}
    )
    job = create_job(mysql_engine, job_spec("stopping", cron_expression="* * * * * *", enabled=False))
    end = datetime.now(UTC).replace(microsecond=0)
    assert backfill(settings, mysql_engine, job, end - timedelta(seconds=6), end).fires == 6
    broker = make_broker(settings)
    service = SchedulerService(settings, engine=mysql_engine, broker=broker)
    publish = service.publish_attempts
    chunks: list[int] = []

    def publish_then_stop(attempts: list[Any]) -> int:
        chunks.append(len(attempts))
        sent = publish(attempts)
        service._stop.set()  # what shutdown() does first
        return sent

    monkeypatch.setattr(service, "publish_attempts", publish_then_stop)
    from tickwork.store.fires import pending_unclaimed

    wait_for(
        lambda: len(pending_unclaimed(mysql_engine, grace_seconds=0.01)) == 6,
        timeout=30,
        what="the six backfilled fires due for the sweep",
    )
    try:
        assert service.lease.try_acquire()
        assert service.sweep_outbox() == 2  # the first chunk, then nothing more
    finally:
        service.lease.release()
        broker.close()
    assert chunks == [2]
    assert len(drain(settings)) == 2


def test_sweeps_outlasting_their_interval_are_not_warnings(
    cluster_settings: Settings, mysql_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox sweep waits up to a second for a gap between the ticker's fires, every second:
    APScheduler's "maximum number of running instances reached" for it is expected (DEBUG),
    and stays a warning for any other job."""
    import logging

    caplog.set_level(logging.DEBUG, logger="apscheduler.scheduler")
    broker = make_broker(cluster_settings)
    service = SchedulerService(cluster_settings, engine=mysql_engine, broker=broker)
    release = threading.Event()
    service.make_room = lambda: release.wait(30) and 0.0  # type: ignore[method-assign]

    def skips() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "maximum number of running instances" in r.getMessage()]

    try:
        service.start()
        assert service.lease.try_acquire()
        wait_for(lambda: any("sweep_outbox" in r.getMessage() for r in skips()), timeout=30,
                 what="an outbox sweep skipped while the last one runs")  # fmt: skip
    finally:
        release.set()
        service.shutdown()
    sweep_skips = [r for r in skips() if "sweep_outbox" in r.getMessage()]
    assert sweep_skips and {r.levelname for r in sweep_skips} == {"DEBUG"}
    # Another job's skip (not one of the service's sweeps) is still a warning.
    other = logging.LogRecord(
        "apscheduler.scheduler", logging.WARNING, __file__, 0,
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
        (type("Job", (), {"id": "outbox-sweep", "func": print})(), 1), None,
    )  # fmt: skip
    assert logging.getLogger("apscheduler.scheduler").filter(other) and other.levelname == "WARNING"
