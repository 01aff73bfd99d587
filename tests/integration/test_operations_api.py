"""Issue 14 through the REST API on real MariaDB and RabbitMQ: tags, strict query parameters,
ETag / If-Match, idempotent triggers, the audit trail, backfill."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.integration.api_support import Api, make_api
from tickwork.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def api(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[Api]:
    yield from make_api(cluster_settings, mysql_engine)


# -- tags and strict query parameters ------------------------------------------------------------


def test_tags_round_trip_and_filter_exactly(api: Api) -> None:
    a = api.create(name="a", tags=["prod", "billing", "prod"])
    api.create(name="b", tags=["prod_x"])  # "_" is not a LIKE wildcard here
    api.create(name="c")
    assert a["tags"] == ["prod", "billing"]  # duplicates dropped, order kept
    assert api.client.get(f"/jobs/{a['id']}", headers=api.viewer).json()["tags"] == ["prod", "billing"]
    page = api.client.get("/jobs?tag=prod", headers=api.viewer).json()
    assert [j["name"] for j in page["items"]] == ["a"] and page["total"] == 1
    assert [j["name"] for j in api.client.get("/jobs?tag=prod_x", headers=api.viewer).json()["items"]] == [
        "b"
    ]
    assert api.client.get("/jobs?tag=pro", headers=api.viewer).json()["total"] == 0
    dash = api.client.get("/dashboard/jobs?tag=billing", headers=api.viewer).json()
    assert [j["name"] for j in dash["items"]] == ["a"] and dash["items"][0]["tags"] == ["prod", "billing"]
    patched = api.client.patch(f"/jobs/{a['id']}", json={"tags": []}, headers=api.admin)
    assert patched.status_code == 200 and patched.json()["tags"] == []


@pytest.mark.parametrize(
    ("tags", "field"),
    [
        (["ok", "has space"], "tags.1"),
        (["x" * 65], "tags.0"),
        ([""], "tags.0"),
        ([5], "tags.0"),
        ("prod", "tags"),
        ([f"t{i}" for i in range(21)], "tags"),
    ],
)
def test_bad_tags_are_422_naming_the_field_and_change_nothing(api: Api, tags: object, field: str) -> None:
    response = api.client.post("/jobs", json={**_seed(), "tags": tags}, headers=api.admin)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field
    assert api.count_jobs() == 0


def test_unknown_query_parameters_are_422_not_ignored(api: Api) -> None:
    job = api.create()
    for path in (
        "/jobs?tags=prod",
        "/jobs?limit=5&colour=red",
        f"/jobs/{job['id']}?verbose=1",
        "/runs?jobid=1",
        "/dlq?x=1",
        "/dashboard/jobs?nam=a",
    ):
        response = api.client.get(path, headers=api.viewer)
        assert response.status_code == 422, (path, response.text)
        detail = response.json()["detail"]
        assert detail[0]["field"] == path.split("?")[1].split("&")[-1].split("=")[0], detail
        assert "unknown query parameter" in detail[0]["reason"]
    deleted = api.client.delete(f"/jobs/{job['id']}?force=true", headers=api.admin)
    assert deleted.status_code == 422 and api.count_jobs() == 1
    assert api.client.get("/jobs?tag=bad tag", headers=api.viewer).json()["detail"][0]["field"] == "tag"
    assert api.client.get("/jobs?limit=5&tag=x", headers=api.viewer).status_code == 200


def _seed() -> dict[str, object]:
    from tests.conftest import SEED

    return dict(SEED)


# -- ETag / If-Match -------------------------------------------------------------------------------


def test_get_sends_the_version_as_etag_and_if_match_refuses_a_moved_job(api: Api) -> None:
    job = api.create(name="etag", cronExpression="* * * * * *")
    read = api.client.get(f"/jobs/{job['id']}", headers=api.viewer)
    tag = read.headers["ETag"]
    assert tag == f'"{read.json()["version"]}"'
    # Another editor changes it: the first editor's PATCH and PUT with the old ETag are 412.
    first = api.client.patch(f"/jobs/{job['id']}", json={"retryCount": 1}, headers=api.admin)
    assert first.status_code == 200 and first.headers["ETag"] == f'"{first.json()["version"]}"' != tag
    stale = api.client.patch(
        f"/jobs/{job['id']}", json={"retryCount": 5}, headers={**api.admin, "If-Match": tag}
    )
    assert stale.status_code == 412, stale.text
    assert stale.headers["ETag"] == first.headers["ETag"] and "changed since" in stale.json()["detail"]
    body = {**_seed(), "name": "etag", "cronExpression": "* * * * * *", "retryCount": 7}
    put = api.client.put(f"/jobs/{job['id']}", json=body, headers={**api.admin, "If-Match": tag})
    assert put.status_code == 412
    now = api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json()
    assert now["retryCount"] == 1 and now["version"] == first.json()["version"]  # nothing changed
    # With the current ETag (or one of a list, or *) the edit applies and moves the ETag.
    fresh = first.headers["ETag"]
    ok = api.client.patch(
        f"/jobs/{job['id']}", json={"retryCount": 2}, headers={**api.admin, "If-Match": f'"0", {fresh}'}
    )
    assert ok.status_code == 200 and ok.json()["retryCount"] == 2 and ok.headers["ETag"] != fresh
    star = api.client.put(f"/jobs/{job['id']}", json=body, headers={**api.admin, "If-Match": "*"})
    assert star.status_code == 200 and star.json()["retryCount"] == 7
    # A weak tag never matches strongly; a malformed header is a 422 naming it.
    weak = api.client.patch(
        f"/jobs/{job['id']}",
        json={"retryCount": 3},
        headers={**api.admin, "If-Match": "W/" + star.headers["ETag"]},
    )
    assert weak.status_code == 412
    bad = api.client.patch(
        f"/jobs/{job['id']}", json={"retryCount": 3}, headers={**api.admin, "If-Match": "7"}
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "If-Match"
    assert api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json()["retryCount"] == 7


def test_fires_do_not_move_the_etag(api: Api) -> None:
    from datetime import timedelta

    from tickwork.store.fires import fire_due_jobs
    from tickwork.store.models import utcnow

    job = api.create(name="fires", cronExpression="* * * * * *")
    tag = api.client.get(f"/jobs/{job['id']}", headers=api.viewer).headers["ETag"]
    result = fire_due_jobs(api.engine, now=utcnow() + timedelta(seconds=3))
    assert result.to_publish, "the job fired"
    after = api.client.get(f"/jobs/{job['id']}", headers=api.viewer)
    assert after.headers["ETag"] == tag and after.json()["nextFireAt"] != job["nextFireAt"]
    edited = api.client.patch(
        f"/jobs/{job['id']}", json={"retryCount": 1}, headers={**api.admin, "If-Match": tag}
    )
    assert edited.status_code == 200


# -- idempotent trigger ------------------------------------------------------------------------------


def test_idempotency_key_answers_the_same_run_and_refuses_another_body(api: Api) -> None:
    import threading

    from sqlalchemy import text

    job = api.create(name="idem")
    other = api.create(name="idem-2")
    url = f"/jobs/{job['id']}/trigger"
    first = api.client.post(url, headers={**api.admin, "Idempotency-Key": "k-1"})
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    again = api.client.post(url, headers={**api.admin, "Idempotency-Key": "k-1"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert api.count_runs() == 1
    # The key is per job; another key is another run; no key is always a new run.
    assert (
        api.client.post(
            f"/jobs/{other['id']}/trigger", headers={**api.admin, "Idempotency-Key": "k-1"}
        ).json()["id"]
        != first.json()["id"]
    )
    assert (
        api.client.post(url, headers={**api.admin, "Idempotency-Key": "k-2"}).json()["id"]
        != first.json()["id"]
    )
    assert api.count_runs() == 3
    # A repeat with a different body is a 422 and makes nothing (a Python job takes arguments).
    from tickwork.spec import JobSpec
    from tickwork.store.jobs import upsert_decorated_job

    py = upsert_decorated_job(
        api.engine,
        JobSpec.model_validate({"name": "idem_py", "handlerType": "python", "handlerData": "idem_py"}),
    )
    py_url = f"/jobs/{py.id}/trigger"
    made = api.client.post(py_url, json={"args": [1]}, headers={**api.admin, "Idempotency-Key": "k-1"})
    same = api.client.post(py_url, json={"args": [1]}, headers={**api.admin, "Idempotency-Key": "k-1"})
    assert made.status_code == 202 and same.json()["id"] == made.json()["id"]
    differs = api.client.post(py_url, json={"args": [2]}, headers={**api.admin, "Idempotency-Key": "k-1"})
    assert differs.status_code == 422 and differs.json()["detail"][0]["field"] == "body", differs.text
    assert "differs from the first request" in differs.json()["detail"][0]["reason"]
    empty = api.client.post(py_url, headers={**api.admin, "Idempotency-Key": "k-1"})
    assert empty.status_code == 422
    assert api.count_runs() == 4
    bad = api.client.post(url, headers={**api.admin, "Idempotency-Key": "has space"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "Idempotency-Key"
    assert api.count_runs() == 4
    # After 24 hours the key makes a new run.
    with api.engine.begin() as conn:
        conn.execute(text("UPDATE trigger_keys SET created_at = created_at - INTERVAL 25 HOUR"))
    later = api.client.post(url, headers={**api.admin, "Idempotency-Key": "k-1"})
    assert later.status_code == 202 and later.json()["id"] != first.json()["id"]
    assert api.count_runs() == 5
    # Eight requests racing with one new key make one run between them.
    answers: list[int] = []
    lock = threading.Lock()

    def fire() -> None:
        response = api.client.post(url, headers={**api.admin, "Idempotency-Key": "race"})
        assert response.status_code == 202, response.text
        with lock:
            answers.append(response.json()["id"])

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 8 and len(set(answers)) == 1
    assert api.count_runs() == 6


# -- the audit trail -----------------------------------------------------------------------------------


def test_every_change_is_an_event_with_who_what_and_before_after(api: Api) -> None:
    from tickwork.spec import JobSpec
    from tickwork.store.jobs import upsert_decorated_job
    from tickwork.store.models import RunStatus
    from tickwork.store.runs import insert_run

    job = api.create(name="audited", handlerData="http://user:pw@127.0.0.1:8080/post")
    jid = job["id"]
    assert (
        api.client.patch(f"/jobs/{jid}", json={"retryCount": 5, "tags": ["a"]}, headers=api.admin).status_code
        == 200
    )
    assert (
        api.client.patch(f"/jobs/{jid}", json={"retryCount": 5}, headers=api.admin).status_code == 200
    )  # no change
    api.client.post(f"/jobs/{jid}/pause", headers=api.admin)
    api.client.post(f"/jobs/{jid}/resume", headers=api.admin)
    run = api.client.post(f"/jobs/{jid}/trigger", headers=api.admin).json()
    dead = [insert_run(api.engine, job_id=jid, scheduled_for=_at(i), status=RunStatus.DEAD) for i in range(3)]
    replayed = api.client.post(f"/dlq/{dead[0]}/replay", headers=api.admin).json()
    assert api.client.post("/dlq/purge", json={"runIds": dead[1:]}, headers=api.admin).json() == {"purged": 2}
    upsert_decorated_job(
        api.engine, JobSpec.model_validate({"name": "deco", "handlerType": "python", "handlerData": "deco"})
    )
    assert api.client.delete(f"/jobs/{jid}", headers=api.admin).status_code == 204

    page = api.client.get(f"/jobs/{jid}/events", headers=api.admin).json()
    kinds = [e["kind"] for e in reversed(page["items"])]
    assert kinds == [
        "job.created",
        "job.updated",
        "job.paused",
        "job.resumed",
        "job.triggered",
        "run.replayed",
        "run.purged",
        "run.purged",
        "job.deleted",
    ]
    by_kind = {e["kind"]: e for e in page["items"]}
    assert all(e["actor"] == "tickwork-admin" or e["actor"] for e in page["items"])
    assert {(e["actor"], e["role"]) for e in page["items"]} == {(_sub(api), "admin")}
    updated = by_kind["job.updated"]["details"]["changes"]
    assert updated == {"retryCount": {"before": 3, "after": 5}, "tags": {"before": [], "after": ["a"]}}
    assert by_kind["job.paused"]["details"]["changes"] == {"enabled": {"before": True, "after": False}}
    assert by_kind["job.triggered"]["runId"] == run["id"]
    assert (
        by_kind["run.replayed"]["runId"] == dead[0]
        and by_kind["run.replayed"]["details"]["newRunId"] == replayed["id"]
    )
    assert {e["runId"] for e in page["items"] if e["kind"] == "run.purged"} == set(dead[1:])
    created = by_kind["job.created"]["details"]["changes"]
    assert created["handlerData"] == {"before": None, "after": "http://user:pw@127.0.0.1:8080/post"}
    # A viewer reads credentials masked, as in job reads.
    viewer_page = api.client.get(f"/jobs/{jid}/events?kind=job.created", headers=api.viewer).json()
    assert "pw" not in viewer_page["items"][0]["details"]["changes"]["handlerData"]["after"]
    # The decorator's registration is its own actor; kind filters and keyset paging.
    deco = api.client.get("/events?kind=job.created", headers=api.viewer).json()["items"]
    assert [(e["actor"], e["role"], e["details"]["name"]) for e in deco] == [
        ("decorator", None, "deco"),
        (_sub(api), "admin", "audited"),
    ]
    first = api.client.get("/events?limit=4", headers=api.viewer).json()
    rest = api.client.get(f"/events?limit=100&beforeId={first['nextBeforeId']}", headers=api.viewer).json()
    ids = [e["id"] for e in first["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 10 and rest["nextBeforeId"] is None
    assert (
        api.client.get(f"/events?jobId={jid}&kind=run.purged", headers=api.viewer).json()["items"][0]["jobId"]
        == jid
    )
    bad = api.client.get("/events?kind=job.exploded", headers=api.viewer)
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "kind.0"


def test_events_are_pruned_with_the_runs_retention(api: Api) -> None:
    from datetime import timedelta

    from sqlalchemy import text

    from tickwork.store.models import utcnow
    from tickwork.store.retention import prune_operations

    api.create(name="old")
    api.create(name="new")
    with api.engine.begin() as conn:
        conn.execute(
            text("UPDATE events SET created_at = created_at - INTERVAL 40 DAY WHERE details LIKE '%\"old\"%'")
        )
    assert prune_operations(api.engine, runs_cutoff=utcnow() - timedelta(days=30)) == (1, 0)
    names = [e["details"]["name"] for e in api.client.get("/events", headers=api.viewer).json()["items"]]
    assert names == ["new"]


def _at(i: int) -> object:
    from datetime import UTC, datetime

    return datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC)


def _sub(api: Api) -> str:
    import jwt

    token = api.admin["Authorization"].split()[1]
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


# -- backfill ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_api(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[Api]:
    settings = cluster_settings.model_copy(
        update={"backfill_max_fires": 30, "backfill_fires_per_second": 10.0}
    )
    yield from make_api(settings, mysql_engine)


def test_backfill_fires_each_scheduled_time_once_in_the_jobs_zone(small_api: Api) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from tickwork.scheduler.cron import CronSchedule
    from tickwork.store.fires import pending_unclaimed
    from tickwork.store.models import RunStatus, runs_table
    from tickwork.store.runs import insert_run

    api = small_api
    job = api.create(name="hourly-berlin", cronExpression="0 0 * * * *", timezone="Europe/Berlin")
    # 2025-03-30 in Berlin has 23 hours (02:00 does not exist).
    start, end = "2025-03-30T00:00:00+01:00", "2025-03-31T00:00:00+02:00"
    expected = [
        t
        for t in CronSchedule("0 0 * * * *", "Europe/Berlin").next_fires(
            datetime(2025, 3, 29, 22, 59, 59, tzinfo=UTC), 30
        )
        if t < datetime(2025, 3, 30, 22, tzinfo=UTC)
    ]
    assert len(expected) == 23
    insert_run(api.engine, job_id=job["id"], scheduled_for=expected[5], status=RunStatus.SUCCESS)
    url = f"/jobs/{job['id']}/backfill"
    first = api.client.post(url, json={"start": start, "end": end}, headers=api.admin)
    assert first.status_code == 202, first.text
    assert first.json() == {"fires": 22, "skippedExisting": 1}
    c = runs_table.c
    with api.engine.connect() as conn:
        rows = conn.execute(
            select(c.scheduled_for, c.trigger, c.status, c.attempt, c.available_at)
            .where(c.job_id == job["id"], c.trigger == "backfill")
            .order_by(c.scheduled_for)
        ).all()
    assert [r.scheduled_for for r in rows] == [t for t in expected if t != expected[5]]
    assert {(r.trigger, r.status, r.attempt) for r in rows} == {("backfill", "PENDING", 1)}
    # Paced: 10 fires/s, so the 22 rows become due over 2.1 s, in order.
    due = sorted(r.available_at for r in rows)
    assert due[-1] - due[0] == timedelta(seconds=2.1)
    # The outbox sweep takes only those due (never-published rows, 2 s after they are due).
    at = due[0] + timedelta(seconds=2, milliseconds=1050)
    swept = pending_unclaimed(api.engine, grace_seconds=30, unpublished_grace_seconds=2, now=at)
    assert [a.trigger for a in swept] == ["backfill"] * 11
    # Again: nothing new. The audit trail has both.
    again = api.client.post(url, json={"start": start, "end": end}, headers=api.admin)
    assert again.json() == {"fires": 0, "skippedExisting": 23}
    events = api.client.get(f"/jobs/{job['id']}/events?kind=job.backfilled", headers=api.viewer).json()[
        "items"
    ]
    assert [e["details"]["fires"] for e in events] == [0, 22]
    assert events[1]["details"]["start"] == "2025-03-29T23:00:00+00:00"


def test_backfill_refuses_bad_ranges_and_too_many_fires(small_api: Api) -> None:
    api = small_api
    job = api.create(name="every-minute", cronExpression="0 * * * * *")
    url = f"/jobs/{job['id']}/backfill"
    cases = [
        ({"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T01:00:00Z"}, "end", "the range has 60 fires"),
        ({"start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z"}, "end", "1,440 fires"),
        ({"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "end", "later than start"),
        ({"start": "2025-01-01T00:00:00Z", "end": "2999-01-01T00:00:00Z"}, "end", "not be later than now"),
        ({"start": "yesterday", "end": "2025-01-01T00:00:00Z"}, "start", ""),
        ({"start": 1700000000, "end": "2025-01-01T00:00:00Z"}, "start", "not a number"),
        ({"start": "2025-01-01T00:00:00Z"}, "end", ""),
        ({"start": "2025-01-01T00:00:00Z", "end": "2025-01-01T00:10:00Z", "step": 1}, "step", ""),
    ]
    for body, field, reason in cases:
        response = api.client.post(url, json=body, headers=api.admin)
        assert response.status_code == 422, (body, response.text)
        detail = response.json()["detail"][0]
        assert detail["field"] == field and reason in detail["reason"], (body, detail)
    assert api.count_runs() == 0
    assert (
        "TICKWORK_BACKFILL_MAX_FIRES (30)" in api.client.post(url, json=cases[0][0], headers=api.admin).text
    )
    replace = api.create(name="replace", cronExpression="0 * * * * *", overlapPolicy="replace")
    refused = api.client.post(
        f"/jobs/{replace['id']}/backfill",
        json={**cases[0][0], "end": "2025-01-01T00:10:00Z"},
        headers=api.admin,
    )
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "overlapPolicy"
    assert api.client.post("/jobs/999999/backfill", json=cases[0][0], headers=api.admin).status_code == 404
    assert api.client.post(url, json=cases[0][0], headers=api.viewer).status_code == 403
    fine = api.client.post(url, json={**cases[0][0], "end": "2025-01-01T00:30:00Z"}, headers=api.admin)
    assert fine.status_code == 202 and fine.json() == {"fires": 30, "skippedExisting": 0}


def test_tickwork_pausing_a_job_itself_is_recorded_as_actor_tickwork(api: Api) -> None:
    from tickwork.store.events import record_auto_pause

    job = api.create(name="flaky")
    with api.engine.begin() as conn:  # the transaction that pauses the job (issue 13's auto-pause)
        record_auto_pause(conn, job_id=job["id"], reason="5 failures in a row", details={"failures": 5})
    event = api.client.get(f"/jobs/{job['id']}/events?kind=job.paused", headers=api.viewer).json()["items"][0]
    assert (event["actor"], event["role"], event["kind"]) == ("tickwork", None, "job.paused")
    assert event["details"]["reason"] == "5 failures in a row" and event["details"]["failures"] == 5
