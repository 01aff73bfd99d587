"""The dashboard's endpoints on real MariaDB and Redis: auth, job rows, cluster view, timeline."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tickwork import keys
from tickwork.api.app import create_app
from tickwork.api.auth import create_token
from tickwork.config import Settings
from tickwork.spec import JobSpec
from tickwork.store import RunStatus, utcnow
from tickwork.store.jobs import create_job
from tickwork.store.runs import claim_attempt, finish_attempt, insert_run

pytestmark = pytest.mark.integration


@pytest.fixture
def client(cluster_settings: Settings, mysql_engine: Engine) -> TestClient:
    app = create_app(cluster_settings, engine=mysql_engine, on_job_changed=lambda _id: None)
    return TestClient(app)


def auth(settings: Settings, role: str = "viewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {create_token(settings, role)}"}


def make_job(engine: Engine, name: str) -> int:
    spec = JobSpec.model_validate(
        {
            "name": name,
            "cronExpression": "0 */1 * * * *",
            "handlerType": "http",
            "handlerData": "http://x.test/",
        }
    )
    return create_job(engine, spec).id


def test_page_is_public_but_data_needs_a_token(client: TestClient, cluster_settings: Settings) -> None:
    page = client.get("/ui")
    assert page.status_code == 200 and "<title>tickwork</title>" in page.text
    assert client.get("/ui/static/app.js").status_code == 200
    assert client.get("/ui/static/../app.py").status_code == 404
    for path in ("/dashboard/jobs", "/cluster", "/stats/timeline"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer nonsense"}).status_code == 401, path
        assert client.get(path, headers=auth(cluster_settings)).status_code == 200, path


def test_job_rows_carry_the_newest_run_and_page_by_id(
    client: TestClient, cluster_settings: Settings, mysql_engine: Engine
) -> None:
    ids = [make_job(mysql_engine, f"job-{i}") for i in range(3)]
    now = utcnow()
    insert_run(mysql_engine, job_id=ids[0], scheduled_for=now - timedelta(minutes=1), status=RunStatus.FAILED)
    insert_run(mysql_engine, job_id=ids[0], scheduled_for=now, status=RunStatus.DEAD)
    first = client.get("/dashboard/jobs?limit=2", headers=auth(cluster_settings)).json()
    assert [j["name"] for j in first["items"]] == ["job-0", "job-1"]
    assert first["items"][0]["lastStatus"] == "DEAD"
    assert first["items"][1]["lastStatus"] is None
    assert first["items"][0]["nextFireAt"] is not None
    second = client.get(
        f"/dashboard/jobs?limit=2&afterId={first['nextAfterId']}", headers=auth(cluster_settings)
    )
    assert [j["name"] for j in second.json()["items"]] == ["job-2"]
    assert second.json()["nextAfterId"] is None
    named = client.get("/dashboard/jobs?name=job-1", headers=auth(cluster_settings)).json()
    assert [j["name"] for j in named["items"]] == ["job-1"]


def test_cluster_reads_the_redis_keys(
    client: TestClient, cluster_settings: Settings, mysql_engine: Engine
) -> None:
    ns = cluster_settings.namespace
    assert cluster_settings.redis_url
    r = redis.Redis.from_url(cluster_settings.redis_url)
    r.set(keys.leader_key(ns), "sched-a tok123", px=3000)
    r.set(keys.scheduler_node_key(ns, "sched-a"), json.dumps({"node_id": "sched-a", "pid": 11}), ex=10)
    r.set(keys.scheduler_node_key(ns, "sched-b"), json.dumps({"node_id": "sched-b", "pid": 12}), ex=10)
    r.set(keys.worker_heartbeat_key(ns, "w-1"), json.dumps({"worker_id": "w-1", "pid": 13}), ex=10)
    r.close()
    job = make_job(mysql_engine, "dead-one")
    insert_run(mysql_engine, job_id=job, scheduled_for=utcnow(), status=RunStatus.DEAD)
    body = client.get("/cluster", headers=auth(cluster_settings)).json()
    assert body["mode"] == "redis" and body["redis"] == "ok"
    assert body["leader"]["nodeId"] == "sched-a" and 0 < body["leader"]["ttlMs"] <= 3000
    assert sorted(s["nodeId"] for s in body["schedulers"]) == ["sched-a", "sched-b"]
    assert [w["workerId"] for w in body["workers"]] == ["w-1"]
    assert body["dlqSize"] == 1


def test_timeline_counts_runs_per_minute_and_lag(
    client: TestClient, cluster_settings: Settings, mysql_engine: Engine
) -> None:
    job = make_job(mysql_engine, "timed")
    now = utcnow()
    for k, seconds_late in enumerate((0.5, 2.0)):
        scheduled = now - timedelta(seconds=10 + k)
        run = insert_run(mysql_engine, job_id=job, scheduled_for=scheduled, now=now)
        assert claim_attempt(mysql_engine, run, "w-1", now=scheduled + timedelta(seconds=seconds_late))
        assert finish_attempt(mysql_engine, run, "w-1", status=RunStatus.SUCCESS)
    body = client.get("/stats/timeline?minutes=5", headers=auth(cluster_settings)).json()
    assert len(body["minutes"]) == 5
    assert sum(body["counts"]["SUCCESS"]) == 2
    assert max(v for v in body["lagMax"] if v is not None) == pytest.approx(2.0, abs=0.01)
    assert [v for v in body["lagAvg"] if v is not None] == [pytest.approx(1.25, abs=0.01)]
