"""What a new user tripped over in the REST API (issue 9): @job edits, DLQ purge, strict JSON,
camelCase everywhere, one name-filter rule. Real MariaDB, RabbitMQ and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.integration.api_support import SEED, Api, make_api
from tickwork.config import Settings
from tickwork.spec import JobSpec
from tickwork.store.jobs import get_job, upsert_decorated_job
from tickwork.store.models import RunStatus
from tickwork.store.runs import get_run, insert_run

pytestmark = pytest.mark.integration


@pytest.fixture
def api(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[Api]:
    yield from make_api(cluster_settings, mysql_engine)


def decorated(engine: Engine) -> tuple[JobSpec, int]:
    """A job as ``@job(cron="0 * * * * *", retries=2)`` on ``nightly`` registers it."""
    spec = JobSpec(
        name="nightly",
        cron_expression="0 * * * * *",
        handler_type="python",
        handler_data="nightly",
        retry_count=2,
    )
    return spec, upsert_decorated_job(engine, spec).id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"retryCount": 5}, "retryCount"),
        ({"cronExpression": "0 0 * * * *"}, "cronExpression"),
        ({"timeoutSeconds": 3}, "timeoutSeconds"),
        ({"queue": "slow"}, "queue"),
        ({"runAt": "2030-01-01T00:00:00Z"}, "cronExpression"),  # a one-time instant drops the cron
    ],
)
def test_patch_of_a_code_owned_field_of_a_job_job_is_refused_naming_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    _, job_id = decorated(api.engine)
    before = get_job(api.engine, job_id)
    response = api.client.patch(f"/jobs/{job_id}", json=change, headers=api.admin)
    assert response.status_code == 409, response.text
    assert response.json()["field"] == field
    assert f"{field} of job 'nightly' is defined in code by @job" in response.json()["detail"]
    assert get_job(api.engine, job_id).version == before.version  # nothing changed
    # PUT is refused the same way; sending the code's own values is fine.
    body = {**api.client.get(f"/jobs/{job_id}", headers=api.viewer).json(), **change}
    keys = ("name", "cronExpression", "handlerType", "handlerData", "retryCount", *change)
    put = {k: body[k] for k in keys}
    if "runAt" in change:
        put["cronExpression"] = None  # PUT replaces: a one-time job has no cron
    assert api.client.put(f"/jobs/{job_id}", json=put, headers=api.admin).status_code == 409
    same = api.client.patch(f"/jobs/{job_id}", json={"retryCount": 2}, headers=api.admin)
    assert same.status_code == 200, same.text


def test_operator_fields_of_a_job_job_survive_the_next_registration(api: Api) -> None:
    spec, job_id = decorated(api.engine)
    change = {"misfirePolicy": "skip", "overlapPolicy": "forbid", "parameters": {"x": 1}, "enabled": False}
    response = api.client.patch(f"/jobs/{job_id}", json=change, headers=api.admin)
    assert response.status_code == 200, response.text
    upsert_decorated_job(api.engine, spec)  # the next worker or scheduler start
    job = get_job(api.engine, job_id)
    assert (job.misfire_policy, job.overlap_policy, job.parameters, job.enabled) == (
        "skip",
        "forbid",
        {"x": 1},
        False,
    )
    # A code change of a code-owned field still lands.
    upsert_decorated_job(api.engine, spec.model_copy(update={"retry_count": 4}))
    assert get_job(api.engine, job_id).retry_count == 4


def test_an_api_job_is_still_editable(api: Api) -> None:
    job = api.create()
    response = api.client.patch(f"/jobs/{job['id']}", json={"retryCount": 5}, headers=api.admin)
    assert response.status_code == 200 and response.json()["retryCount"] == 5


def dead_run(api: Api, job_id: int, second: int) -> int:
    return insert_run(
        api.engine,
        job_id=job_id,
        scheduled_for=datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC),
        status=RunStatus.DEAD,
    )


def test_dlq_purge_of_unknown_or_live_runs_is_refused_all_or_nothing(api: Api) -> None:
    job = api.create()
    dead = dead_run(api, job["id"], 1)
    succeeded = insert_run(
        api.engine,
        job_id=job["id"],
        scheduled_for=datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC),
        status=RunStatus.SUCCESS,
    )
    unknown = api.client.post("/dlq/purge", json={"runIds": [dead, 999_999_999]}, headers=api.admin)
    assert unknown.status_code == 404, unknown.text
    assert "999999999" in unknown.json()["detail"]
    live = api.client.post("/dlq/purge", json={"runIds": [dead, succeeded]}, headers=api.admin)
    assert live.status_code == 409, live.text
    assert f"run {succeeded} is SUCCESS, not DEAD" in live.json()["detail"]
    assert get_run(api.engine, dead).status == RunStatus.DEAD  # all or nothing
    ok = api.client.post("/dlq/purge", json={"runIds": [dead]}, headers=api.admin)
    assert ok.status_code == 200 and ok.json() == {"purged": 1}
    assert get_run(api.engine, dead).status == RunStatus.DISCARDED
    # Purging it again: it is no longer DEAD.
    again = api.client.post("/dlq/purge", json={"runIds": [dead]}, headers=api.admin)
    assert again.status_code == 409
    # Purge all still answers how many it discarded (none is fine).
    assert api.client.post("/dlq/purge", headers=api.admin).json() == {"purged": 0}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"retryCount": "3"}, "retryCount"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"runAt": 1767225600, "cronExpression": None}, "runAt"),
        ({"retryBackoffSeconds": 10.0}, "retryBackoffSeconds"),
        ({"timeoutSeconds": "5"}, "timeoutSeconds"),
        ({"maxBackoffSeconds": 5, "retryBackoffSeconds": 10}, "maxBackoffSeconds"),
    ],
)
def test_api_json_is_strict_no_coercion_no_adjustment(api: Api, change: dict[str, Any], field: str) -> None:
    before = api.count_jobs()
    response = api.client.post("/jobs", json={**SEED, **change}, headers=api.admin)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["detail"]], response.text
    assert api.count_jobs() == before
    job = api.create(name="strict-patch")
    patched = api.client.patch(f"/jobs/{job['id']}", json=change, headers=api.admin)
    assert patched.status_code == 422, patched.text
    assert field in [e["field"] for e in patched.json()["detail"]], patched.text


def test_strict_json_still_takes_what_json_can_say(api: Api) -> None:
    job = api.create(
        name="typed",
        cronExpression=None,
        runAt="2030-01-01T00:00:00Z",
        timeoutSeconds=5,  # a float field takes a JSON integer
        maxBackoffSeconds=10,
        retryBackoffSeconds=10,
        misfirePolicy="skip",
    )
    assert job["runAt"] == "2030-01-01T00:00:00Z" and job["timeoutSeconds"] == 5
    assert job["maxBackoffSeconds"] == 10 and job["misfirePolicy"] == "skip"


def test_every_json_key_and_error_field_is_camel_case(api: Api) -> None:
    cluster = api.client.get("/cluster", headers=api.viewer)
    assert cluster.status_code == 200, cluster.text

    def keys(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for key, child in value.items():
                yield key
                yield from keys(child)
        elif isinstance(value, list):
            for child in value:
                yield from keys(child)

    assert [k for k in keys(cluster.json()) if "_" in k] == []
    for path in ("/jobs/0", "/jobs/0/runs", "/runs/0", "/dlq/0/replay"):
        method = api.client.post if path.endswith("replay") else api.client.get
        response = method(path, headers=api.admin)
        assert response.status_code == 422, (path, response.text)
        fields = [e["field"] for e in response.json()["detail"]]
        assert fields in (["jobId"], ["runId"]), (path, fields)
        assert all("_" not in str(part) for e in response.json()["detail"] for part in e["loc"])


def test_one_name_filter_rule_for_the_dashboard_and_the_jobs_list(api: Api) -> None:
    for name in ("backup-db", "db-backup", "nightly-db-vacuum", "reports"):
        api.create(name=name)
    listed = api.client.get("/jobs?name=db", headers=api.viewer).json()
    dashboard = api.client.get("/dashboard/jobs?name=db", headers=api.viewer)
    assert dashboard.status_code == 200, dashboard.text
    expected = ["backup-db", "db-backup", "nightly-db-vacuum"]
    assert [j["name"] for j in listed["items"]] == expected
    assert [j["name"] for j in dashboard.json()["items"]] == expected
