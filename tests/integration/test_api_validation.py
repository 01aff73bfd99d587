"""Every invalid input is a 422 naming the field and the reason, and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.integration.api_support import SEED, Api, make_api
from tickwork.config import Settings
from tickwork.spec import JobSpec
from tickwork.store.jobs import create_job

pytestmark = pytest.mark.integration


@pytest.fixture
def api(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[Api]:
    yield from make_api(cluster_settings, mysql_engine)


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, overrides of the seed, field, a word of the reason)
    ("bad cron", {"cronExpression": "61 * * * * *"}, "cronExpression", "second"),
    ("cron with 7 fields", {"cronExpression": "* * * * * * *"}, "cronExpression", "fields"),
    ("impossible date", {"cronExpression": "0 0 0 30 2 *"}, "cronExpression", "never"),
    ("unknown macro", {"cronExpression": "@fortnightly"}, "cronExpression", "macro"),
    ("unknown handler type", {"handlerType": "shell"}, "handlerType", "http"),
    (
        "unregistered python handler",
        {"handlerType": "python", "handlerData": "no_such_job"},
        "handlerData",
        "@job",
    ),
    ("ftp url", {"handlerData": "ftp://127.0.0.1/x"}, "handlerData", "http"),
    ("url without host", {"handlerData": "http:///x"}, "handlerData", "host"),
    ("metadata address", {"handlerData": "http://169.254.169.254/latest"}, "handlerData", "denied"),
    ("negative retries", {"retryCount": -1}, "retryCount", "greater"),
    ("absurd retries", {"retryCount": 10**9}, "retryCount", "less"),
    ("negative backoff", {"retryBackoffSeconds": -5}, "retryBackoffSeconds", "greater"),
    ("zero timeout", {"timeoutSeconds": 0}, "timeoutSeconds", "greater"),
    ("unknown zone", {"timezone": "Mars/Olympus"}, "timezone", "unknown"),
    ("wrong type", {"retryCount": "three"}, "retryCount", "integer"),
    ("unknown field", {"color": "red"}, "color", "not permitted"),
    ("cron and runAt", {"runAt": "2030-01-01T00:00:00Z"}, "runAt", "not both"),
    ("bad runAt", {"cronExpression": None, "runAt": "tomorrow"}, "runAt", "datetime"),
    (
        "runAt without a UTC instant",
        {"cronExpression": None, "runAt": "0001-01-01T00:00:00+01:00"},
        "runAt",
        "range",
    ),
    ("bad name", {"name": "has space"}, "name", "letters"),
    ("empty name", {"name": ""}, "name", "at least"),
    ("bad queue", {"queue": "a b"}, "queue", "letters"),
    ("bad misfire policy", {"misfirePolicy": "sometimes"}, "misfirePolicy", "fire_once"),
    ("unknown http parameter", {"parameters": {"verb": "GET"}}, "parameters", "unknown"),
    ("bad http method", {"parameters": {"method": "FETCH"}}, "parameters.method", "GET"),
    ("NUL in the name", {"name": "a\u0000b"}, "name", "control characters"),
    ("NUL in the URL", {"handlerData": "http://127.0.0.1:8080/p\u0000st"}, "handlerData", "control"),
    ("newline inside the URL", {"handlerData": "http://127.0.0.1/a\nb"}, "handlerData", "control"),
    ("escape in the queue", {"queue": "q\u001b[31m"}, "queue", "control characters"),
    ("C1 control in the time zone", {"timezone": "UTC\u0085x"}, "timezone", "control characters"),
    (
        "parameters nested too deep",
        {"parameters": {"json": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}},
        "parameters.json.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0",
        "deeper than 16",
    ),
]


@pytest.mark.parametrize(("label", "overrides", "field", "word"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_job_is_422_with_field_and_reason(
    api: Api, label: str, overrides: dict[str, Any], field: str, word: str
) -> None:
    response = api.client.post("/jobs", json={**SEED, **overrides}, headers=api.admin)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["field"] == field and word.lower() in e["reason"].lower() for e in errors), errors
    assert all({"field", "reason", "loc", "msg"} <= set(e) for e in errors)
    assert api.count_jobs() == 0


#: Bodies httpx cannot write from Python objects (json.dumps(allow_nan=False), UTF-8): sent as text.
RAW_INVALID: list[tuple[str, str, str, str]] = [
    # (case, JSON fields added to the seed, field, a word of the reason)
    ("NaN parameter", '"parameters": {"json": NaN}', "parameters.json", "NaN and Infinity"),
    ("overflowing parameter", '"parameters": {"json": 1e400}', "parameters.json", "NaN and Infinity"),
    ("Infinity parameter", '"parameters": {"json": {"a": [1, -Infinity]}}', "parameters.json.a.1", "NaN"),
    ("NaN timeout", '"timeoutSeconds": NaN', "timeoutSeconds", "finite number"),
    ("infinite timeout", '"timeoutSeconds": Infinity', "timeoutSeconds", "finite number"),
    ("NaN misfire grace", '"misfireGraceSeconds": NaN', "misfireGraceSeconds", "finite number"),
    ("overflowing retries", '"retryCount": 1e400', "retryCount", "integer"),
    ("lone surrogate in the name", '"name": "a\\ud800"', "name", "unicode"),
    ("lone surrogate in parameters", '"parameters": {"json": "\\udfff"}', "parameters.json", "surrogate"),
]


def _seed_with(fields: str) -> str:
    seed = json.dumps(SEED)
    return seed[:-1] + ", " + fields + "}"


@pytest.mark.parametrize(("label", "fields", "field", "word"), RAW_INVALID, ids=[c[0] for c in RAW_INVALID])
def test_non_json_numbers_and_text_are_422_not_500(
    api: Api, label: str, fields: str, field: str, word: str
) -> None:
    """Python's json reads NaN, Infinity and 1e400 (as inf) and lone surrogates; MariaDB's JSON
    check and utf8mb4 do not: without the check they were a 500 (OperationalError 4025)."""
    body = _seed_with(fields)
    assert json.loads(body)  # valid for Python's reader, so it reaches the model
    for method, path in (("post", "/jobs"), ("put", f"/jobs/{api.create(name='existing')['id']}")):
        response = api.client.request(
            method, path, content=body.encode("utf-8", "surrogatepass"), headers=_json_headers(api)
        )
        assert response.status_code == 422, (method, response.text)
        errors = response.json()["detail"]
        assert any(e["field"] == field and word.lower() in e["reason"].lower() for e in errors), errors
    assert api.count_jobs() == 1


def _json_headers(api: Api) -> dict[str, str]:
    return {**api.admin, "content-type": "application/json"}


def test_patch_and_trigger_refuse_non_json_numbers(api: Api) -> None:
    job = api.create()
    patched = api.client.patch(
        f"/jobs/{job['id']}", content=b'{"parameters": {"json": NaN}}', headers=_json_headers(api)
    )
    assert patched.status_code == 422, patched.text
    assert patched.json()["detail"][0]["field"] == "parameters.json"
    timeout = api.client.patch(
        f"/jobs/{job['id']}", content=b'{"timeoutSeconds": NaN}', headers=_json_headers(api)
    )
    assert timeout.status_code == 422, timeout.text
    assert "finite" in timeout.json()["detail"][0]["reason"]
    assert api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json() == job

    decorated = {**SEED, "name": "nightly", "handlerType": "python", "handlerData": "nightly_report"}
    python_job = {"id": create_job(api.engine, JobSpec.model_validate(decorated), source="decorator").id}
    for content, field in (
        (b'{"kwargs": {"limit": Infinity}}', "kwargs.limit"),
        (b'{"args": [1, NaN]}', "args.1"),
    ):
        response = api.client.post(
            f"/jobs/{python_job['id']}/trigger", content=content, headers=_json_headers(api)
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["field"] == field
    assert api.count_runs() == 0


def test_missing_required_fields_are_named(api: Api) -> None:
    response = api.client.post("/jobs", json={"cronExpression": "* * * * *"}, headers=api.admin)
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["detail"]} >= {"name", "handlerType", "handlerData"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[1, 2]", "application/json"),
    ],
)
def test_undecodable_bodies_are_422(api: Api, body: bytes, content_type: str) -> None:
    response = api.client.post("/jobs", content=body, headers={**api.admin, "content-type": content_type})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"]
    assert api.count_jobs() == 0


def test_oversize_body_is_422_naming_the_limit_and_writes_nothing(api: Api) -> None:
    limit = api.settings.max_payload_bytes
    huge = {**SEED, "parameters": {"body": "x" * (limit + 10)}}
    response = api.client.post("/jobs", json=huge, headers=api.admin)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    size = int(response.request.headers["content-length"])
    assert error["field"] == "body"
    assert error["reason"] == f"{size} bytes, more than TICKWORK_MAX_PAYLOAD_BYTES ({limit})"
    assert {"loc", "msg", "type"} <= set(error)

    def chunks() -> Any:
        for _ in range(limit // 1000 + 50):
            yield b" " * 1000

    # Chunked, no Content-Length: refused once the bytes read pass the limit.
    streamed = api.client.post(
        "/jobs", content=chunks(), headers={**api.admin, "content-type": "application/json"}
    )
    assert streamed.status_code == 422
    [error] = streamed.json()["detail"]
    assert error["field"] == "body" and "more than TICKWORK_MAX_PAYLOAD_BYTES" in error["reason"]
    assert error["reason"].startswith("at least ")
    assert api.count_jobs() == 0


def test_registered_python_handler_is_accepted(api: Api) -> None:
    decorated = {**SEED, "name": "reports.nightly", "handlerType": "python", "handlerData": "nightly_report"}
    create_job(api.engine, JobSpec.model_validate(decorated), source="decorator")
    for handler in ("nightly_report", "reports.nightly"):
        response = api.client.post(
            "/jobs",
            json={**SEED, "name": f"extra-{handler}", "handlerType": "python", "handlerData": handler},
            headers=api.admin,
        )
        assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("put", {**SEED, "cronExpression": "nope"}, "cronExpression"),
        ("put", {**SEED, "handlerData": "http://169.254.169.254/"}, "handlerData"),
        ("patch", {"cronExpression": "nope"}, "cronExpression"),
        ("patch", {"timezone": "Nowhere/Land"}, "timezone"),
        ("patch", {"name": None}, "name"),
        ("patch", {"retryCount": -3}, "retryCount"),
        ("patch", {"handlerType": "python"}, "handlerData"),
        ("patch", {"unknown": 1}, "unknown"),
    ],
)
def test_invalid_update_is_422_and_leaves_the_job_unchanged(
    api: Api, method: str, body: dict[str, Any], field: str
) -> None:
    job = api.create()
    response = api.client.request(method, f"/jobs/{job['id']}", json=body, headers=api.admin)
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["detail"]}
    assert api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json() == job
    assert api.woken == [job["id"]]


@pytest.mark.parametrize(
    "path",
    [
        "/jobs?limit=0",
        "/jobs?limit=100000",
        "/jobs?offset=-1",
        "/jobs/0",
        "/jobs/abc",
        "/jobs/99999999999999999999999",
        "/runs?beforeId=-4",
        "/runs?since=2026-13-45",
        "/runs?since=0001-01-01T00:00:00%2B01:00",
        "/runs?jobId=x",
        "/dlq?limit=-1",
    ],
)
def test_invalid_query_and_path_parameters_are_422(api: Api, path: str) -> None:
    response = api.client.get(path, headers=api.viewer)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"]


def test_trigger_arguments_only_for_python_jobs(api: Api) -> None:
    job = api.create()
    response = api.client.post(f"/jobs/{job['id']}/trigger", json={"args": [1]}, headers=api.admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "args"
    assert api.count_runs() == 0
