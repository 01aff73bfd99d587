"""Issue 13's store and API on MariaDB, step by step (no scheduler thread: each sweep is called):
a missing fire reported once, racing sweeps reporting each fire once, auto-pause counting from
the resume, the health filter, delivery against a receiver, and every bad input a 422."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from tests.conftest import SEED
from tests.integration.api_support import Api, make_api
from tests.webhook_receiver import Switchable
from tickwork.alerts import verify
from tickwork.config import Settings
from tickwork.notify import Deliverer
from tickwork.spec import JobSpec
from tickwork.store.alerts import (
    after_run_dead,
    due_notifications,
    prune_notifications,
    sweep_late,
    sweep_recovered,
)
from tickwork.store.jobs import create_job, set_enabled
from tickwork.store.models import jobs_table, notifications_table, runs_table, utcnow, watermarks_table
from tickwork.store.runs import insert_run

pytestmark = pytest.mark.integration

HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def engine(mysql_engine: Engine) -> Iterator[Engine]:
    with mysql_engine.begin() as conn:
        conn.execute(delete(notifications_table))
    yield mysql_engine


def events(engine: Engine, event: str | None = None) -> list[Any]:
    query = select(notifications_table).order_by(notifications_table.c.id)
    if event:
        query = query.where(notifications_table.c.event == event)
    with engine.connect() as conn:
        return list(conn.execute(query))


def set_job(engine: Engine, job_id: int, *, late_checked_until: Any = "keep", **values: Any) -> None:
    """Change a job's row (and its late watermark: None removes it)."""
    with engine.begin() as conn:
        if values:
            conn.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(**values))
        if late_checked_until != "keep":
            conn.execute(delete(watermarks_table).where(watermarks_table.c.job_id == job_id))
            if late_checked_until is not None:
                mark = insert(watermarks_table).values(job_id=job_id, checked_until=late_checked_until)
                conn.execute(mark)


def make_job(engine: Engine, **fields: Any) -> int:
    spec = JobSpec.model_validate({**SEED, "name": fields.pop("name", "alerting"), **fields})
    return create_job(engine, spec).id


def test_a_missing_fire_is_reported_once_and_not_again_when_its_row_appears(engine: Engine) -> None:
    job_id = make_job(engine, cronExpression="0 * * * * *", lateAfterSeconds=30, notifyUrl=HOOK)
    missed = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    # Every scheduler down for five minutes (since before the sweep last looked): next_fire_at stayed.
    set_job(engine, job_id, next_fire_at=missed, late_checked_until=missed - timedelta(minutes=1))
    assert sweep_late(engine, notify_url=None, lookback_seconds=3600) == 1
    assert sweep_late(engine, notify_url=None, lookback_seconds=3600) == 0
    [late] = events(engine, "job.late")
    assert late.run_id is None and late.target == HOOK
    assert '"status":"MISSING"' in late.payload
    # A scheduler comes back and makes the fire (catch-up): its row is marked, not re-reported.
    run_id = insert_run(engine, job_id=job_id, scheduled_for=missed)
    set_job(engine, job_id, next_fire_at=utcnow() + timedelta(minutes=1))
    assert sweep_late(engine, notify_url=None, lookback_seconds=3600) == 0
    with engine.connect() as conn:
        assert conn.scalar(select(runs_table.c.late_at).where(runs_table.c.id == run_id)) is not None
    assert len(events(engine, "job.late")) == 1


def test_racing_sweeps_report_each_late_fire_exactly_once(engine: Engine) -> None:
    job_id = make_job(engine, cronExpression="* * * * * *", lateAfterSeconds=5, notifyUrl=HOOK)
    start = utcnow().replace(microsecond=0) - timedelta(minutes=2)
    fires = [start + timedelta(seconds=i) for i in range(60)]
    for index, fire in enumerate(fires):
        run_id = insert_run(engine, job_id=job_id, scheduled_for=fire)
        with engine.begin() as conn:  # every third fire succeeded in time; the others hang
            values: dict[str, Any] = {"status": "RUNNING"}
            if index % 3 == 0:
                values = {"status": "SUCCESS", "finished_at": fire + timedelta(seconds=1)}
            conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(**values))
    set_job(engine, job_id, next_fire_at=utcnow() + timedelta(hours=1), late_checked_until=start)
    results: list[int] = []
    barrier = threading.Barrier(3)

    def sweep() -> None:
        barrier.wait()
        results.append(sweep_late(engine, notify_url=None, lookback_seconds=3600))

    threads = [threading.Thread(target=sweep) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(results) == 40
    reported = Counter(n.run_id for n in events(engine, "job.late"))
    assert len(reported) == 40 and set(reported.values()) == {1}
    with engine.connect() as conn:
        marked = conn.scalar(
            select(runs_table.c.id)
            .where(runs_table.c.job_id == job_id, runs_table.c.late_at.is_not(None))
            .limit(1)
        )
    assert marked is not None


def test_a_fire_skipped_by_the_misfire_policy_is_late_one_skipped_for_overlap_is_not(engine: Engine) -> None:
    job_id = make_job(engine, cronExpression="0 * * * * *", lateAfterSeconds=10)
    base = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=3)
    missed = insert_run(engine, job_id=job_id, scheduled_for=base, status="SKIPPED", trigger="misfire")
    overlap = insert_run(
        engine, job_id=job_id, scheduled_for=base + timedelta(minutes=1), status="SKIPPED", trigger="schedule"
    )
    set_job(engine, job_id, next_fire_at=utcnow() + timedelta(minutes=1), late_checked_until=base)
    assert sweep_late(engine, notify_url=HOOK, lookback_seconds=3600) == 1
    assert [n.run_id for n in events(engine, "job.late")] == [missed]
    with engine.connect() as conn:
        late = dict(
            conn.execute(
                select(runs_table.c.id, runs_table.c.late_at).where(runs_table.c.job_id == job_id)
            ).all()
        )
    assert late[missed] is not None and late[overlap] is None


def test_turning_the_switch_on_does_not_judge_past_fires(api: Api, engine: Engine) -> None:
    job = api.create(name="was-failing", cronExpression="* * * * * *")
    start = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    for i in range(30):  # thirty past seconds that never succeeded
        insert_run(engine, job_id=job["id"], scheduled_for=start + timedelta(seconds=i), status="DEAD")
    patched = api.client.patch(f"/jobs/{job['id']}", json={"lateAfterSeconds": 5}, headers=api.admin)
    assert patched.status_code == 200 and patched.json()["lateAfterSeconds"] == 5
    set_job(engine, job["id"], next_fire_at=utcnow() + timedelta(hours=1))
    assert sweep_late(engine, notify_url=HOOK, lookback_seconds=3600) == 0
    assert events(engine, "job.late") == []
    # The same fires with no watermark (a job the sweep never saw) are judged, back to the lookback.
    set_job(engine, job["id"], late_checked_until=None)
    assert sweep_late(engine, notify_url=HOOK, lookback_seconds=3600) == 30


def _dead_run(engine: Engine, job_id: int, offset: int) -> int:
    """A fire whose only attempt went DEAD, and what follows (as the worker's hook does)."""
    fire = utcnow().replace(microsecond=0) + timedelta(seconds=offset)
    run_id = insert_run(engine, job_id=job_id, scheduled_for=fire)
    with engine.begin() as conn:
        conn.execute(
            update(runs_table).where(runs_table.c.id == run_id).values(status="DEAD", finished_at=utcnow())
        )
        after_run_dead(conn, run_id, notify_url=None, now=utcnow())
    return run_id


def test_auto_pause_counts_consecutive_dead_runs_since_the_last_resume(engine: Engine) -> None:
    job_id = make_job(engine, cronExpression="0 0 * * * *", pauseAfterFailures=2, notifyUrl=HOOK)
    _dead_run(engine, job_id, 1)
    with engine.connect() as conn:
        assert conn.scalar(select(jobs_table.c.enabled).where(jobs_table.c.id == job_id)) is True
    _dead_run(engine, job_id, 2)
    with engine.connect() as conn:
        row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).one()
    assert row.enabled is False and row.paused_reason == "auto: 2 consecutive dead runs"
    assert len(events(engine, "job.paused")) == 1 and len(events(engine, "run.dead")) == 2
    _dead_run(engine, job_id, 3)  # already paused: no second pause
    assert len(events(engine, "job.paused")) == 1
    resumed = set_enabled(engine, job_id, True)
    assert resumed.paused_reason is None and resumed.enabled
    _dead_run(engine, job_id, 4)  # one dead run since the resume: not yet
    assert set_enabled(engine, job_id, True).enabled
    _dead_run(engine, job_id, 5)
    with engine.connect() as conn:
        assert conn.scalar(select(jobs_table.c.enabled).where(jobs_table.c.id == job_id)) is False
    assert len(events(engine, "job.paused")) == 2
    # A success afterwards is a recovery, reported once.
    run_id = insert_run(engine, job_id=job_id, scheduled_for=utcnow() + timedelta(seconds=9))
    with engine.begin() as conn:
        conn.execute(
            update(runs_table)
            .where(runs_table.c.id == run_id)
            .values(status="SUCCESS", finished_at=utcnow() + timedelta(seconds=1))
        )
    assert sweep_recovered(engine, notify_url=None) == 1
    assert sweep_recovered(engine, notify_url=None) == 0
    assert [n.run_id for n in events(engine, "job.recovered")] == [run_id]


def test_delivery_signs_retries_and_refuses_a_denied_target(
    cluster_settings: Settings, engine: Engine
) -> None:
    receiver = Switchable(status=503).start()
    settings = cluster_settings.model_copy(
        update={
            "notify_secret": "deliver-secret-123",
            "notify_backoff_seconds": 0.01,
            "notify_max_backoff_seconds": 0.01,
        }
    )
    try:
        job_id = make_job(engine, cronExpression="0 0 * * * *", notifyUrl=receiver.url)
        _dead_run(engine, job_id, 1)
        with engine.begin() as conn:  # written around the API's check, as an old row could be
            conn.execute(
                update(jobs_table)
                .where(jobs_table.c.id == job_id)
                .values(notify_url="http://169.254.169.254/x")
            )
        _dead_run(engine, job_id, 2)
        deliverer = Deliverer(settings, engine)
        try:
            assert deliverer.deliver_due() == 0  # 503 and refused
            first, second = events(engine, "run.dead")
            assert (
                first.status == "PENDING" and first.attempts == 1 and first.last_error.startswith("HTTP 503")
            )
            assert second.attempts == 1 and "target refused" in second.last_error
            assert not [r for r in receiver.received if b"169.254" in r.body]
            receiver.status = 200
            later = utcnow() + timedelta(seconds=1)
            assert [d.id for d in due_notifications(engine, now=later)] == [first.id, second.id]
            assert deliverer.deliver_due(now=later) == 1
        finally:
            deliverer.close()
        delivered = events(engine, "run.dead")[0]
        assert delivered.status == "DELIVERED" and delivered.attempts == 2
        last = receiver.received[-1]
        assert verify(last.body, "deliver-secret-123", last.headers["x-tickwork-signature"])
        assert last.body.decode() == delivered.payload
        # Retention drops delivered and failed rows, never one still to deliver.
        assert prune_notifications(engine, older_than=utcnow() + timedelta(minutes=1)) == 1
        assert [n.status for n in events(engine)] == ["PENDING"]
    finally:
        receiver.stop()


@pytest.fixture
def api(cluster_settings: Settings, engine: Engine) -> Iterator[Api]:
    yield from make_api(cluster_settings, engine)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lateAfterSeconds": -5}, "lateAfterSeconds"),
        ({"lateAfterSeconds": 0}, "lateAfterSeconds"),
        ({"lateAfterSeconds": "60"}, "lateAfterSeconds"),
        ({"pauseAfterFailures": 0}, "pauseAfterFailures"),
        ({"notifyUrl": "ftp://example.com/hook"}, "notifyUrl"),
        ({"notifyUrl": "http://169.254.169.254/latest"}, "notifyUrl"),
        ({"notifyUrl": "http://[fe80::1]/hook"}, "notifyUrl"),
        ({"notifyUrl": "not a url"}, "notifyUrl"),
    ],
)
def test_bad_alert_fields_are_a_422_naming_the_field_and_change_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    job = api.create(name="validated")
    created = api.client.post("/jobs", json={**SEED, "name": "other", **body}, headers=api.admin)
    assert created.status_code == 422, created.text
    assert created.json()["detail"][0]["field"] == field
    patched = api.client.patch(f"/jobs/{job['id']}", json=body, headers=api.admin)
    assert patched.status_code == 422 and patched.json()["detail"][0]["field"] == field
    assert api.count_jobs() == 1
    assert api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json()["version"] == job["version"]


def test_health_filter_and_fields(api: Api, engine: Engine) -> None:
    healthy = api.create(name="fine")
    failing = api.create(name="broken", notifyUrl="http://user:pw@127.0.0.1:9/hook")
    paused = api.create(name="stopped")
    api.client.post(f"/jobs/{paused['id']}/pause", headers=api.admin)
    _dead_run(engine, failing["id"], 1)
    late = api.create(name="slow", lateAfterSeconds=60)
    with engine.begin() as conn:
        conn.execute(update(jobs_table).where(jobs_table.c.id == late["id"]).values(late_since=utcnow()))
    for health, expected in (("healthy", healthy), ("failing", failing), ("paused", paused), ("late", late)):
        page = api.client.get(f"/jobs?health={health}", headers=api.viewer).json()
        assert [j["id"] for j in page["items"]] == [expected["id"]] and page["total"] == 1, health
        assert page["items"][0]["health"] == health
    stopped = api.client.get(f"/jobs/{paused['id']}", headers=api.viewer).json()
    assert stopped["pausedReason"] == "manual" and stopped["lastSuccessAt"] is None
    masked = api.client.get(f"/jobs/{failing['id']}", headers=api.viewer).json()["notifyUrl"]
    assert "pw" not in masked
    bad = api.client.get("/jobs?health=sleepy", headers=api.viewer)
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "health"
    bad = api.client.get("/notifications?status=LOST", headers=api.viewer)
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "status"
    listed = api.client.get(f"/notifications?jobId={failing['id']}", headers=api.viewer).json()["items"]
    assert [n["event"] for n in listed] == ["run.dead"] and listed[0]["status"] == "PENDING"
    assert "pw" not in listed[0]["target"]


def test_cli_notifications_list_and_jobs_health(cluster_settings: Settings, engine: Engine) -> None:
    from tests.integration.test_cli import run

    job_id = make_job(engine, name="cli-failing", cronExpression="0 0 * * * *", notifyUrl=HOOK)
    _dead_run(engine, job_id, 1)
    listed = run(cluster_settings, "notifications", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    assert [(n["event"], n["jobId"], n["target"], n["status"], n["attempts"]) for n in items] == [
        ("run.dead", job_id, HOOK, "PENDING", 0)
    ]
    table = run(cluster_settings, "notifications", "list", "--status", "PENDING")
    assert table.returncode == 0 and "run.dead" in table.stdout and HOOK in table.stdout
    bad = run(cluster_settings, "notifications", "list", "--status", "LOST")
    assert bad.returncode == 2 and "--status" in bad.stderr
    jobs = run(cluster_settings, "jobs", "list", "--health", "failing")
    assert (
        jobs.returncode == 0
        and "cli-failing" in jobs.stdout
        and "failing (last success never)" in jobs.stdout
    )
    late = run(
        cluster_settings, "jobs", "add", "--name", "x", "--http", "http://127.0.0.1:9/", "--late-after", "-1"
    )
    assert late.returncode == 2
    assert late.stderr.strip() == (
        "tickwork: invalid --late-after (lateAfterSeconds): Input should be greater than or equal to 1"
    )
