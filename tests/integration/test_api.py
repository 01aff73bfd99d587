"""The REST API on real MariaDB, RabbitMQ and Redis: every endpoint, the seed round trip."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pika
import pytest
import redis
from sqlalchemy import Engine

from tests.integration.api_support import SEED, Api, make_api
from tickwork.config import Settings
from tickwork.keys import scheduler_wake_channel
from tickwork.messaging import queue_name
from tickwork.store.models import RunStatus, RunTrigger
from tickwork.store.runs import get_run, insert_run

pytestmark = pytest.mark.integration


@pytest.fixture
def api(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[Api]:
    yield from make_api(cluster_settings, mysql_engine)


def test_seed_job_round_trips_exactly(api: Api) -> None:
    response = api.client.post("/jobs", json=SEED, headers=api.admin)
    assert response.status_code == 201, response.text
    body = response.json()
    for key, value in SEED.items():
        assert body[key] == value
        assert type(body[key]) is type(value)
    assert isinstance(body["id"], int)
    for key in ("createdAt", "updatedAt", "nextFireAt"):
        assert datetime.fromisoformat(body[key].replace("Z", "+00:00")).tzinfo is not None
    assert body["enabled"] is True
    assert body["timezone"] == "UTC"
    next_fire = datetime.fromisoformat(body["nextFireAt"].replace("Z", "+00:00"))
    assert next_fire.second == 0 and next_fire > datetime.now(UTC)
    fetched = api.client.get(f"/jobs/{body['id']}", headers=api.viewer).json()
    assert fetched == body
    assert api.woken == [body["id"]]


def test_list_filters_and_paginates(api: Api) -> None:
    for i in range(5):
        api.create(name=f"job-{i}", enabled=i % 2 == 0)
    page = api.client.get("/jobs?limit=2&offset=1", headers=api.viewer).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 1
    assert [j["name"] for j in page["items"]] == ["job-1", "job-2"]
    paused = api.client.get("/jobs?enabled=false", headers=api.viewer).json()
    assert {j["name"] for j in paused["items"]} == {"job-1", "job-3"}
    named = api.client.get("/jobs?name=job-4", headers=api.viewer).json()
    assert [j["name"] for j in named["items"]] == ["job-4"]
    assert api.client.get("/jobs?handlerType=python", headers=api.viewer).json()["total"] == 0


def test_put_replaces_and_patch_changes_some_fields(api: Api) -> None:
    job = api.create()
    replaced = {**SEED, "name": "renamed", "cronExpression": "*/5 * * * *", "timezone": "Europe/Berlin"}
    response = api.client.put(f"/jobs/{job['id']}", json=replaced, headers=api.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["name"], body["cronExpression"], body["timezone"]) == (
        "renamed",
        "*/5 * * * *",
        "Europe/Berlin",
    )
    assert body["retryCount"] == 3 and body["createdAt"] == job["createdAt"]

    response = api.client.patch(f"/jobs/{job['id']}", json={"retryCount": 7}, headers=api.admin)
    assert response.status_code == 200 and response.json()["retryCount"] == 7
    assert response.json()["cronExpression"] == "*/5 * * * *"

    run_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    response = api.client.patch(f"/jobs/{job['id']}", json={"runAt": run_at.isoformat()}, headers=api.admin)
    assert response.status_code == 200, response.text
    assert response.json()["cronExpression"] is None
    assert response.json()["nextFireAt"].startswith(run_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert api.woken == [job["id"]] * 4


def test_put_onto_another_jobs_name_is_409_and_changes_nothing(api: Api) -> None:
    first = api.create(name="first")
    api.create(name="second")
    response = api.client.put(f"/jobs/{first['id']}", json={**SEED, "name": "second"}, headers=api.admin)
    assert response.status_code == 409
    assert api.client.get(f"/jobs/{first['id']}", headers=api.viewer).json()["name"] == "first"


def test_duplicate_name_is_409(api: Api) -> None:
    api.create()
    response = api.client.post("/jobs", json=SEED, headers=api.admin)
    assert response.status_code == 409
    assert "test-http" in response.json()["detail"]
    assert api.count_jobs() == 1


def test_delete_removes_the_job_and_its_runs(api: Api) -> None:
    job = api.create()
    insert_run(api.engine, job_id=job["id"], scheduled_for=datetime.now(UTC))
    assert api.client.delete(f"/jobs/{job['id']}", headers=api.admin).status_code == 204
    assert api.client.get(f"/jobs/{job['id']}", headers=api.viewer).status_code == 404
    assert api.client.delete(f"/jobs/{job['id']}", headers=api.admin).status_code == 404
    assert api.count_runs() == 0


def test_pause_and_resume(api: Api) -> None:
    job = api.create()
    paused = api.client.post(f"/jobs/{job['id']}/pause", headers=api.admin)
    assert paused.status_code == 200 and paused.json()["enabled"] is False
    resumed = api.client.post(f"/jobs/{job['id']}/resume", headers=api.admin)
    assert resumed.status_code == 200 and resumed.json()["enabled"] is True
    assert api.woken == [job["id"], job["id"]]
    assert api.client.post("/jobs/999999/pause", headers=api.admin).status_code == 404


def test_next_fires_preview(api: Api) -> None:
    job = api.create(cronExpression="0 0 9 * * *", timezone="Europe/Berlin")
    response = api.client.get(
        f"/jobs/{job['id']}/next-fires?count=3&after=2026-03-28T00:00:00Z", headers=api.viewer
    )
    assert response.status_code == 200
    # 09:00 Berlin is 08:00 UTC before the DST change on 29 March and 07:00 UTC after it.
    assert response.json()["fires"] == [
        "2026-03-28T08:00:00Z",
        "2026-03-29T07:00:00Z",
        "2026-03-30T07:00:00Z",
    ]
    assert api.client.get(f"/jobs/{job['id']}/next-fires?count=0", headers=api.viewer).status_code == 422
    assert api.client.get(f"/jobs/{job['id']}/next-fires?count=101", headers=api.viewer).status_code == 422
    on_demand = api.create(name="on-demand", cronExpression=None)
    assert api.client.get(f"/jobs/{on_demand['id']}/next-fires", headers=api.viewer).json()["fires"] == []


def test_trigger_writes_a_pending_run_and_publishes_it_to_rabbitmq(api: Api) -> None:
    job = api.create()
    response = api.client.post(f"/jobs/{job['id']}/trigger", headers=api.admin)
    assert response.status_code == 202, response.text
    run = response.json()
    assert (run["jobId"], run["status"], run["attempt"], run["trigger"]) == (
        job["id"],
        "PENDING",
        1,
        "manual",
    )
    assert run["enqueuedAt"] is not None
    for key in ("id", "jobId", "status", "attempt", "output", "createdAt", "updatedAt"):
        assert key in run
    connection = pika.BlockingConnection(pika.URLParameters(api.settings.broker_url))
    try:
        channel = connection.channel()
        queue = queue_name(api.settings, "default")
        deadline = time.monotonic() + 5
        count = 0
        while time.monotonic() < deadline and count == 0:
            count = channel.queue_declare(queue, passive=True).method.message_count
            time.sleep(0.1)
        assert count == 1
    finally:
        connection.close()
    assert api.client.post("/jobs/999999/trigger", headers=api.admin).status_code == 404


def test_default_hook_publishes_on_the_scheduler_wake_channel(cluster_settings, mysql_engine) -> None:
    client = redis.Redis.from_url(cluster_settings.redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(scheduler_wake_channel(cluster_settings.namespace))
    try:
        pubsub.get_message(timeout=1)  # the subscribe confirmation
        for plain_api in make_api(cluster_settings, mysql_engine, hook=False):
            job = plain_api.create()
            message = pubsub.get_message(timeout=5)
            assert message is not None and message["data"] == str(job["id"]).encode()
    finally:
        pubsub.close()
        client.close()


def _runs(api: Api, job_id: int) -> list[int]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    ids = []
    for i, status in enumerate(["SUCCESS", "FAILED", "SUCCESS", "DEAD", "PENDING"]):
        ids.append(
            insert_run(
                api.engine,
                job_id=job_id,
                scheduled_for=base + timedelta(minutes=i),
                status=status,
                now=base + timedelta(minutes=i),
            )
        )
    return ids


def test_run_log_endpoints(api: Api) -> None:
    job = api.create()
    other = api.create(name="other")
    ids = _runs(api, job["id"])
    _runs(api, other["id"])

    page = api.client.get(f"/jobs/{job['id']}/runs?limit=2", headers=api.viewer).json()
    assert [r["id"] for r in page["items"]] == [ids[4], ids[3]]
    assert page["nextBeforeId"] == ids[3]
    rest = api.client.get(f"/jobs/{job['id']}/runs?limit=10&beforeId={ids[3]}", headers=api.viewer).json()
    assert [r["id"] for r in rest["items"]] == [ids[2], ids[1], ids[0]] and rest["nextBeforeId"] is None

    run = api.client.get(f"/runs/{ids[0]}", headers=api.viewer).json()
    assert {"id", "jobId", "status", "attempt", "output", "createdAt", "updatedAt"} <= set(run)
    assert (run["jobId"], run["status"], run["attempt"]) == (job["id"], "SUCCESS", 1)

    failed = api.client.get("/runs?status=FAILED&status=DEAD", headers=api.viewer).json()["items"]
    assert len(failed) == 4 and {r["status"] for r in failed} == {"FAILED", "DEAD"}
    since = api.client.get(f"/runs?jobId={job['id']}&since=2026-01-01T00:03:00Z", headers=api.viewer).json()[
        "items"
    ]
    assert [r["id"] for r in since] == [ids[4], ids[3]]
    naive = api.client.get(f"/runs?jobId={job['id']}&since=2026-01-01T00:03:00", headers=api.viewer)
    assert [r["id"] for r in naive.json()["items"]] == [ids[4], ids[3]]
    until = api.client.get(f"/runs?jobId={job['id']}&until=2026-01-01T00:01:00Z", headers=api.viewer).json()[
        "items"
    ]
    assert [r["id"] for r in until] == [ids[0]]

    assert api.client.get("/runs/999999999", headers=api.viewer).status_code == 404
    assert api.client.get("/jobs/999999/runs", headers=api.viewer).status_code == 404
    assert api.client.get("/runs?status=NOPE", headers=api.viewer).status_code == 422
    assert api.client.get("/runs?since=yesterday", headers=api.viewer).status_code == 422


def test_dead_letter_queue_lists_replays_and_purges(api: Api) -> None:
    job = api.create()
    when = datetime(2026, 1, 1, tzinfo=UTC)
    first = insert_run(api.engine, job_id=job["id"], scheduled_for=when, status=RunStatus.FAILED)
    dead = insert_run(
        api.engine, job_id=job["id"], scheduled_for=when, attempt=2, status=RunStatus.DEAD, error="HTTP 500"
    )
    other = insert_run(api.engine, job_id=job["id"], scheduled_for=when, attempt=9, status=RunStatus.DEAD)

    listed = api.client.get("/dlq", headers=api.viewer).json()["items"]
    assert [r["id"] for r in listed] == [other, dead]
    assert listed[1]["error"] == "HTTP 500"
    assert api.client.get(f"/dlq?jobId={job['id'] + 1000}", headers=api.viewer).json()["items"] == []

    response = api.client.post(f"/dlq/{dead}/replay", headers=api.admin)
    assert response.status_code == 202, response.text
    replayed = response.json()
    assert replayed["status"] == "PENDING" and replayed["trigger"] == RunTrigger.REPLAY.value
    assert replayed["attempt"] == 10  # after the highest attempt of that fire
    assert get_run(api.engine, dead).status == RunStatus.REPLAYED.value
    assert api.client.post(f"/dlq/{dead}/replay", headers=api.admin).status_code == 409
    assert api.client.post(f"/dlq/{first}/replay", headers=api.admin).status_code == 409
    assert api.client.post("/dlq/999999999/replay", headers=api.admin).status_code == 404

    purged = api.client.post("/dlq/purge", json={"runIds": [other]}, headers=api.admin)
    assert purged.status_code == 200 and purged.json() == {"purged": 1}
    assert get_run(api.engine, other).status == RunStatus.DISCARDED.value
    assert api.client.get("/dlq", headers=api.viewer).json()["items"] == []
    again = insert_run(api.engine, job_id=job["id"], scheduled_for=when, attempt=20, status=RunStatus.DEAD)
    assert api.client.delete("/dlq", headers=api.admin).json() == {"purged": 1}
    assert get_run(api.engine, again).status == RunStatus.DISCARDED.value
    assert api.client.post("/dlq/purge", headers=api.viewer).status_code == 403


def test_health_readiness_and_metrics_are_open(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "redis": "ok"}
    metrics = api.client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")


def test_readiness_is_503_when_a_service_is_unreachable(cluster_settings, mysql_engine) -> None:
    broken = cluster_settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    for broken_api in make_api(broken, mysql_engine):
        response = broken_api.client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unavailable" and body["checks"]["redis"].startswith("error")
        assert body["checks"]["database"] == "ok"


def test_openapi_document_is_complete(api: Api) -> None:
    doc = api.client.get("/openapi.json", headers=api.viewer).json()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    post = doc["paths"]["/jobs"]["post"]
    assert post["security"] == [{"bearerAuth": []}]
    assert {"201", "401", "403", "409", "422"} <= set(post["responses"])
    assert "TICKWORK_MAX_PAYLOAD_BYTES" in post["responses"]["422"]["description"]
    assert "413" not in post["responses"]  # an oversize body is a 422 like any invalid input
    schemas = doc["components"]["schemas"]
    assert {"JobOut", "RunOut", "JobSpec", "ValidationErrorBody", "ErrorBody"} <= set(schemas)
    assert "cronExpression" in schemas["JobSpec"]["properties"]
    for path in ("/jobs/{job_id}/trigger", "/jobs/{job_id}/next-fires", "/runs", "/dlq", "/dlq/purge"):
        assert path in doc["paths"]
    assert "security" not in doc["paths"]["/healthz"]["get"]


def test_trigger_with_the_broker_down_leaves_the_run_pending_for_the_outbox(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    down = cluster_settings.model_copy(update={"broker_url": "amqp://guest:guest@127.0.0.1:1/%2F"})
    for down_api in make_api(down, mysql_engine):
        job = down_api.create()
        started = time.monotonic()
        response = down_api.client.post(f"/jobs/{job['id']}/trigger", headers=down_api.admin)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "PENDING" and response.json()["enqueuedAt"] is None
        assert time.monotonic() - started < 30
        assert down_api.count_runs() == 1


def test_every_write_logs_one_line_with_its_ids(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tickwork.api")

    def lines() -> list[logging.LogRecord]:
        found = [
            r for r in caplog.records if r.name.startswith("tickwork.api.") and r.levelno == logging.INFO
        ]
        caplog.clear()
        return found

    job = api.create()
    [created] = lines()
    assert created.getMessage().startswith("job created by ") and created.job_id == job["id"]  # type: ignore[attr-defined]
    api.client.patch(f"/jobs/{job['id']}", json={"retryCount": 5}, headers=api.admin)
    [changed] = lines()
    assert "retryCount" in changed.getMessage() and changed.job_id == job["id"]  # type: ignore[attr-defined]
    api.client.put(f"/jobs/{job['id']}", json=SEED, headers=api.admin)
    api.client.post(f"/jobs/{job['id']}/pause", headers=api.admin)
    api.client.post(f"/jobs/{job['id']}/resume", headers=api.admin)
    assert [r.getMessage().split(" by ")[0] for r in lines()] == ["job replaced", "job paused", "job resumed"]
    run = api.client.post(f"/jobs/{job['id']}/trigger", headers=api.admin).json()
    [triggered] = lines()
    assert (triggered.job_id, triggered.run_id) == (job["id"], run["id"])  # type: ignore[attr-defined]

    dead = insert_run(
        api.engine, job_id=job["id"], scheduled_for=datetime(2026, 1, 1, tzinfo=UTC), status=RunStatus.DEAD
    )
    replayed = api.client.post(f"/dlq/{dead}/replay", headers=api.admin).json()
    [replay] = lines()
    assert f"dead run {dead} replayed" in replay.getMessage()
    assert (replay.job_id, replay.run_id) == (job["id"], replayed["id"])  # type: ignore[attr-defined]
    # Purging a run that is not DEAD is refused (409) and writes nothing, so it is not audited.
    assert (
        api.client.post("/dlq/purge", json={"runIds": [replayed["id"]]}, headers=api.admin).status_code == 409
    )
    dead_too = insert_run(
        api.engine, job_id=job["id"], scheduled_for=datetime(2026, 1, 2, tzinfo=UTC), status=RunStatus.DEAD
    )
    api.client.post("/dlq/purge", json={"runIds": [dead_too]}, headers=api.admin)
    api.client.delete(f"/jobs/{job['id']}", headers=api.admin)
    purge, deleted = lines()
    assert purge.getMessage().startswith("dlq purged: 1 of 1 dead run id(s)")
    assert deleted.getMessage().startswith("job deleted") and deleted.job_id == job["id"]  # type: ignore[attr-defined]

    api.client.get("/jobs", headers=api.viewer)
    api.client.post("/jobs", json={**SEED, "name": "viewer"}, headers=api.viewer)  # 403
    api.client.post("/jobs", json={**SEED, "cronExpression": "bad"}, headers=api.admin)  # 422
    assert lines() == []  # reads and refused writes log nothing
