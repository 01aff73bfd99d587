"""Issue 13 on MariaDB, RabbitMQ and Redis: auto-pause, late fires, signed webhooks, delivery.

A scheduler node, worker threads and the API run in this process on the real services; the
http jobs call a loopback target the test switches between ok, failing (500) and hanging, and
the webhooks go to loopback receivers the test starts, stops or makes answer 500.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, update

from tests.integration.api_support import Api, make_api
from tests.webhook_receiver import Switchable
from tests.worker_helpers import wait_for
from tickwork.config import Settings
from tickwork.notify import Deliverer
from tickwork.scheduler.service import SchedulerService
from tickwork.store.models import jobs_table, notifications_table, runs_table, utcnow
from tickwork.worker import setup_broker, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SECRET = "test-notify-secret-0123456789"


@pytest.fixture
def alert_settings(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[Settings]:
    with mysql_engine.begin() as conn:
        conn.execute(delete(notifications_table))
    yield cluster_settings.model_copy(
        update={
            "notify_secret": SECRET,
            "notify_backoff_seconds": 0.5,
            "notify_max_backoff_seconds": 1.0,
            "notify_deadline_seconds": 60.0,
            "notify_timeout_seconds": 2.0,
        }
    )


@contextmanager
def cluster(settings: Settings, engine: Engine) -> Iterator[tuple[Api, SchedulerService]]:
    broker = setup_broker(settings, engine=engine)
    worker = start_worker(settings, broker, threads=4)
    scheduler = SchedulerService(settings, engine=engine, broker=broker)
    scheduler.start()
    try:
        for api in make_api(settings, engine, hook=False):
            yield api, scheduler
    finally:
        scheduler.shutdown()
        worker.stop()
        broker.close()


def verified(received: Any) -> dict[str, Any]:
    """The webhook's JSON after checking its signature as a receiver would."""
    expected = "sha256=" + hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["x-tickwork-signature"], expected)
    document: dict[str, Any] = received.json
    return document


def notifications(engine: Engine, **where: Any) -> list[Any]:
    query = select(notifications_table).order_by(notifications_table.c.id)
    for key, value in where.items():
        query = query.where(notifications_table.c[key] == value)
    with engine.connect() as conn:
        return list(conn.execute(query))


def get_job(api: Api, job_id: int) -> dict[str, Any]:
    body: dict[str, Any] = api.client.get(f"/jobs/{job_id}", headers=api.viewer).json()
    return body


def http_job(api: Api, target: Switchable, **fields: Any) -> dict[str, Any]:
    return api.create(
        name=fields.pop("name"),
        cronExpression="* * * * * *",
        handlerData=target.url,
        retryCount=0,
        **fields,
    )


def test_failing_target_auto_pauses_the_job_with_a_signed_webhook_and_resume_clears_it(
    alert_settings: Settings, mysql_engine: Engine
) -> None:
    target = Switchable().start()
    receiver = Switchable().start()
    settings = alert_settings.model_copy(update={"notify_url": receiver.url})
    try:
        with cluster(settings, mysql_engine) as (api, _scheduler):
            job = http_job(api, target, name="starts-failing", pauseAfterFailures=3)
            assert job["pauseAfterFailures"] == 3 and job["pausedReason"] is None
            wait_for(
                lambda: api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json()["lastSuccessAt"],
                60,
                0.2,
                "a first success",
            )
            target.status = 500  # the target starts failing
            paused = wait_for(
                lambda: (
                    body
                    if not (body := api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json())[
                        "enabled"
                    ]
                    else None
                ),
                60,
                0.2,
                "the auto-pause",
            )
            assert paused["pausedReason"] == "auto: 3 consecutive dead runs"
            assert paused["health"] == "paused"
            listed = api.client.get("/jobs?health=paused", headers=api.viewer).json()["items"]
            assert [j["id"] for j in listed] == [job["id"]]

            hooks = wait_for(lambda: receiver.events("job.paused"), 30, 0.2, "the job.paused webhook")
            document = verified(hooks[0])
            assert set(document) == {"event", "at", "job", "run"}
            assert document["job"]["id"] == job["id"]
            assert document["job"]["pausedReason"] == "auto: 3 consecutive dead runs"
            assert document["run"]["status"] == "DEAD"
            assert all(verified(r)["event"] == "run.dead" for r in receiver.events("run.dead"))
            assert len(receiver.events("run.dead")) >= 3
            # One pause, one job.paused, however many dead runs were in flight.
            assert len(notifications(mysql_engine, event="job.paused")) == 1
            api_rows = api.client.get("/notifications?event=job.paused", headers=api.viewer).json()
            assert [n["status"] for n in api_rows["items"]] == ["DELIVERED"]
            # The audit trail (issue 14) has tickwork's own pause, once, committed with it.
            trail = api.client.get(f"/jobs/{job['id']}/events?kind=job.paused", headers=api.viewer).json()
            assert [(e["actor"], e["role"]) for e in trail["items"]] == [("tickwork", None)]
            assert trail["items"][0]["details"]["reason"] == "auto: 3 consecutive dead runs"

            target.status = 200
            resumed = api.client.post(f"/jobs/{job['id']}/resume", headers=api.admin).json()
            assert resumed["enabled"] is True and resumed["pausedReason"] is None
            assert resumed["health"] != "paused"
            wait_for(lambda: receiver.events("job.recovered"), 60, 0.2, "job.recovered after the resume")
            again = api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json()
            assert again["enabled"] is True and again["health"] == "healthy"
            assert len(notifications(mysql_engine, event="job.paused")) == 1
    finally:
        target.stop()
        receiver.stop()


def test_hanging_target_is_late_once_per_fire_then_recovers(
    alert_settings: Settings, mysql_engine: Engine
) -> None:
    target = Switchable().start()
    receiver = Switchable().start()
    settings = alert_settings.model_copy(update={"notify_url": receiver.url})
    try:
        with cluster(settings, mysql_engine) as (api, _scheduler):
            target.hang = 4.0  # past lateAfterSeconds; the attempt times out at 5 s
            job = http_job(api, target, name="hangs", lateAfterSeconds=2, timeoutSeconds=5.0)
            wait_for(lambda: len(receiver.events("job.late")) >= 3, 60, 0.2, "three job.late webhooks")
            assert api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json()["health"] == "late"
            late_jobs = api.client.get("/jobs?health=late", headers=api.viewer).json()["items"]
            assert [j["id"] for j in late_jobs] == [job["id"]]

            target.hang = 0.0
            wait_for(lambda: receiver.events("job.recovered"), 60, 0.2, "job.recovered")
            wait_for(
                lambda: (
                    api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json()["health"] == "healthy"
                ),
                30,
                0.2,
                "health back to healthy",
            )
            recovered = verified(receiver.events("job.recovered")[0])
            assert recovered["run"]["status"] == "SUCCESS"
        # Stopped. A fire that was still hanging when the target recovered can be marked late
        # just before the scheduler stops, its notification left PENDING in the outbox: the next
        # leader's deliverer sends it. Play that deliverer until every job.late is delivered.
        deliverer = Deliverer(settings, mysql_engine)
        try:
            wait_for(
                lambda: (
                    deliverer.deliver_due() >= 0
                    and all(n.status == "DELIVERED" for n in notifications(mysql_engine, event="job.late"))
                ),
                30,
                0.2,
                "every job.late notification delivered",
            )
        finally:
            deliverer.close()
        # Every late fire is reported exactly once, and only late fires are.
        with mysql_engine.connect() as conn:
            late_runs = {
                row.id
                for row in conn.execute(
                    select(runs_table.c.id).where(
                        runs_table.c.job_id == job["id"], runs_table.c.late_at.is_not(None)
                    )
                )
            }
        reported = Counter(n.run_id for n in notifications(mysql_engine, event="job.late"))
        assert set(reported) == late_runs
        assert all(count == 1 for count in reported.values()), reported
        hooks = Counter(verified(r)["run"]["id"] for r in receiver.events("job.late"))
        assert set(hooks) == late_runs  # delivered at least once each
    finally:
        target.stop()
        receiver.stop()


def test_a_fire_missed_while_every_scheduler_is_down_is_reported_late(
    alert_settings: Settings, mysql_engine: Engine
) -> None:
    target = Switchable().start()
    receiver = Switchable().start()
    settings = alert_settings.model_copy(update={"notify_url": receiver.url})
    try:
        with cluster(settings, mysql_engine) as (api, scheduler):
            job = api.create(
                name="missed",
                cronExpression="*/2 * * * * *",
                handlerData=target.url,
                lateAfterSeconds=1,
                misfirePolicy="skip",
            )
            wait_for(
                lambda: api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json()["lastSuccessAt"],
                30,
                0.2,
                "a first success",
            )
            scheduler.shutdown()  # the only scheduler: no fire is made from here
            with mysql_engine.connect() as conn:
                missed = conn.scalar(select(jobs_table.c.next_fire_at).where(jobs_table.c.id == job["id"]))
            assert missed is not None
            wait_for(lambda: utcnow() > missed + timedelta(seconds=2), 10, 0.1, "the fire's deadline")
            iso = missed.isoformat().replace("+00:00", "Z")
            # Nobody is watching: no scheduler runs.
            assert not [r for r in receiver.events("job.late") if r.json["run"]["scheduledFor"] == iso]
            back = SchedulerService(settings, engine=mysql_engine)
            back.start()
            try:
                hooks = wait_for(
                    lambda: [
                        verified(r)
                        for r in receiver.events("job.late")
                        if r.json["run"]["scheduledFor"] == iso
                    ],
                    30,
                    0.2,
                    "the missed fire's job.late",
                )
                assert len(hooks) == 1
                # Each scheduled time is reported at most once, however it was found.
                times = Counter(verified(r)["run"]["scheduledFor"] for r in receiver.events("job.late"))
                assert all(count == 1 for count in times.values()), times
            finally:
                back.shutdown()
    finally:
        target.stop()
        receiver.stop()


def test_deliveries_retry_until_the_receiver_is_back_and_a_500_forever_ends_failed(
    alert_settings: Settings, mysql_engine: Engine
) -> None:
    target = Switchable(status=500).start()
    late_receiver = Switchable()  # down until the test starts it
    broken = Switchable(status=500).start()
    settings = alert_settings.model_copy(
        update={"notify_url": late_receiver.url, "notify_deadline_seconds": 8.0}
    )
    try:
        with cluster(settings, mysql_engine) as (api, _scheduler):
            job = api.create(
                name="dies-once",
                cronExpression=None,
                runAt=utcnow().isoformat(),
                retryCount=0,
                handlerData=target.url,
                notifyUrl=broken.url,
            )
            rows = wait_for(
                lambda: [n for n in notifications(mysql_engine, target=late_receiver.url) if n.attempts >= 2],
                30,
                0.2,
                "two failed attempts to the down receiver",
            )
            assert rows[0].status == "PENDING" and "ConnectError" in rows[0].last_error
            # Meanwhile fires are made on time: a per-second job keeps firing.
            ticking = api.create(
                name="keeps-ticking", cronExpression="* * * * * *", handlerData=target.url, retryCount=0
            )
            late_receiver.start()
            delivered = wait_for(
                lambda: notifications(mysql_engine, id=rows[0].id, status="DELIVERED"),
                30,
                0.2,
                "delivery once the receiver is back",
            )
            assert delivered[0].event == "run.dead" and delivered[0].job_id == job["id"]
            assert delivered[0].attempts >= 3  # two refused, then delivered
            assert any(verified(r)["job"]["id"] == job["id"] for r in late_receiver.events("run.dead"))

            failed = wait_for(
                lambda: notifications(mysql_engine, target=broken.url, job_id=job["id"], status="FAILED"),
                60,
                0.3,
                "the 500-forever target to end FAILED",
            )
            assert failed[0].last_error.startswith("HTTP 500")
            assert failed[0].attempts >= 3 and len(broken.events("run.dead")) >= 3
            listed = api.client.get("/notifications?status=FAILED", headers=api.viewer).json()["items"]
            assert any(n["id"] == failed[0].id and n["lastError"].startswith("HTTP 500") for n in listed)
            with mysql_engine.connect() as conn:
                fires = sorted(
                    conn.execute(
                        select(runs_table.c.scheduled_for, runs_table.c.status).where(
                            runs_table.c.job_id == ticking["id"], runs_table.c.attempt == 1
                        )
                    )
                )
            # Every second was fired while deliveries failed: none missed, none skipped.
            assert len(fires) >= 5
            assert {f.status for f in fires} <= {"PENDING", "RUNNING", "FAILED", "DEAD", "SUCCESS"}
            gaps = {(b.scheduled_for - a.scheduled_for).total_seconds() for a, b in itertools.pairwise(fires)}
            assert gaps == {1.0}
            with mysql_engine.begin() as conn:  # stop the per-second job's dead letters
                conn.execute(update(jobs_table).where(jobs_table.c.id == ticking["id"]).values(enabled=False))
    finally:
        target.stop()
        late_receiver.stop()
        broken.stop()
