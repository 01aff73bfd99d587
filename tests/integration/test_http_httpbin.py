"""The http actor against a real httpbin on loopback, through the REST API, RabbitMQ and a worker.

The seed job of the spec, as written (only the host changed), must succeed with httpbin's echo of
a POST as its ``output`` and the status code in ``httpStatus``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from sqlalchemy import Engine

from tests.conftest import SEED
from tests.integration.api_support import Api, make_api
from tests.worker_helpers import runs_of_job, wait_for
from tickwork.config import Settings
from tickwork.worker import WorkerHandle, setup_broker, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: The spec's sample job, byte for byte, with httpbin.org's host left to be replaced.
SPEC_SEED = (
    '{"name":"test-http","cronExpression":"0 */1 * * * *","handlerType":"http",'
    '"handlerData":"http://httpbin.org/post", "retryCount":3,"retryBackoffSeconds":10}'
)


@pytest.fixture
def api(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[Api]:
    yield from make_api(cluster_settings.model_copy(update={"output_max_bytes": 1000}), mysql_engine)


@pytest.fixture
def worker(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[WorkerHandle]:
    settings = cluster_settings.model_copy(update={"output_max_bytes": 1000})
    broker: dramatiq.Broker = setup_broker(settings, engine=mysql_engine)
    handle = start_worker(settings, broker, threads=4)
    yield handle
    handle.stop(10)
    broker.close()


def create(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = api.client.post("/jobs", json=body, headers=api.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def trigger(api: Api, job_id: int) -> dict[str, Any]:
    response = api.client.post(f"/jobs/{job_id}/trigger", headers=api.admin)
    assert response.status_code == 202, response.text
    run: dict[str, Any] = response.json()
    return run


def final_runs(api: Api, job_id: int, final: str, timeout: float = 60) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        response = api.client.get(f"/jobs/{job_id}/runs", headers=api.viewer)
        items: list[dict[str, Any]] = response.json()["items"]
        return items if items and items[0]["status"] == final else None

    items = wait_for(done, timeout, 0.2, f"job {job_id}'s newest run {final}")
    return list(reversed(items))  # oldest attempt first


def test_the_spec_seed_job_succeeds_with_httpbins_post_echo(
    api: Api, worker: WorkerHandle, httpbin_url: str
) -> None:
    body = json.loads(SPEC_SEED.replace("http://httpbin.org", httpbin_url))
    job = create(api, body)
    assert {k: job[k] for k in body} == body
    trigger(api, job["id"])
    (run,) = final_runs(api, job["id"], "SUCCESS")
    assert run["httpStatus"] == 200
    echo = json.loads(run["output"])  # the response body itself: no status line in front
    assert set(echo) >= {"args", "data", "files", "form", "headers", "json", "origin", "url"}
    assert echo["url"].endswith("/post")
    assert echo["data"] == "" and echo["json"] is None  # POST with an empty body
    assert run["error"] is None and run["traceback"] is None


def test_parameters_method_still_selects_another_method(
    api: Api, worker: WorkerHandle, httpbin_url: str
) -> None:
    job = create(
        api,
        {**SEED, "name": "get", "handlerData": f"{httpbin_url}/get?x=1", "parameters": {"method": "GET"}},
    )
    trigger(api, job["id"])
    (run,) = final_runs(api, job["id"], "SUCCESS")
    assert run["httpStatus"] == 200 and json.loads(run["output"])["args"] == {"x": "1"}


def test_status_500_is_retried_then_dead_without_a_traceback(
    api: Api, worker: WorkerHandle, httpbin_url: str, mysql_engine: Engine
) -> None:
    job = create(
        api,
        {**SEED, "name": "s500", "handlerData": f"{httpbin_url}/status/500", "retryBackoffSeconds": 0},
    )
    trigger(api, job["id"])
    runs = final_runs(api, job["id"], "DEAD")
    assert [r["status"] for r in runs] == ["FAILED", "FAILED", "FAILED", "DEAD"]
    assert [r["attempt"] for r in runs] == [1, 2, 3, 4]
    for run in runs:
        assert run["httpStatus"] == 500
        assert run["error"] == "HTTP 500 INTERNAL SERVER ERROR"
        assert run["traceback"] is None  # an expected failure: the error says it all
    assert all(r.traceback is None and r.http_status == 500 for r in runs_of_job(mysql_engine, job["id"]))


def test_delay_longer_than_the_timeout_times_out(api: Api, worker: WorkerHandle, httpbin_url: str) -> None:
    job = create(
        api,
        {
            **SEED,
            "name": "delay",
            "handlerData": f"{httpbin_url}/delay/5",
            "timeoutSeconds": 1,
            "retryCount": 0,
        },
    )
    trigger(api, job["id"])
    (run,) = final_runs(api, job["id"], "DEAD")
    assert run["error"] == "timeout after 1 s"
    assert run["httpStatus"] is None and run["output"] is None and run["traceback"] is None


def test_redirect_is_not_followed(api: Api, worker: WorkerHandle, httpbin_url: str) -> None:
    job = create(
        api,
        {
            **SEED,
            "name": "redirect",
            "handlerData": f"{httpbin_url}/redirect/1",
            "parameters": {"method": "GET"},
            "retryCount": 0,
        },
    )
    trigger(api, job["id"])
    (run,) = final_runs(api, job["id"], "DEAD")
    assert run["httpStatus"] == 302
    assert run["error"] == "HTTP 302 FOUND"
    assert run["traceback"] is None


def test_bytes_over_the_output_limit_are_truncated(api: Api, worker: WorkerHandle, httpbin_url: str) -> None:
    job = create(
        api,
        {
            **SEED,
            "name": "bytes",
            "handlerData": f"{httpbin_url}/range/5000",  # 5000 ASCII letters, a-z repeated
            "parameters": {"method": "GET"},
        },
    )
    trigger(api, job["id"])
    (run,) = final_runs(api, job["id"], "SUCCESS")
    assert run["httpStatus"] == 200
    assert len(run["output"].encode()) == 1000  # output_max_bytes in this test
    assert run["output"] == ("abcdefghijklmnopqrstuvwxyz" * 40)[:1000]


def test_random_bytes_over_the_output_limit_are_truncated(
    api: Api, worker: WorkerHandle, httpbin_url: str
) -> None:
    job = create(
        api,
        {
            **SEED,
            "name": "random-bytes",
            "handlerData": f"{httpbin_url}/bytes/5000",
            "parameters": {"method": "GET"},
        },
    )
    trigger(api, job["id"])
    (run,) = final_runs(api, job["id"], "SUCCESS")
    assert run["httpStatus"] == 200
    assert 0 < len(run["output"].encode()) <= 1000
