"""Property-based, on MariaDB: schemathesis drives every operation of the app's own OpenAPI
document against the app on the session's MariaDB database, with an admin and a viewer token.

No response may be a 500 (MariaDB refuses what SQLite stores: NaN in JSON, 32-deep documents,
lone surrogates), use an undocumented status code or content type, or break its schema. With
the viewer token every write must be refused (403, or 422 for a body that cannot be read) and
change nothing. The broker is the in-process one (publishing is covered by the other API tests;
generated queue names would leave queues behind on RabbitMQ). Bounded: a few derandomized
examples per operation and token, well under a minute in all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine

from tests.conftest import SEED
from tests.integration.api_support import Api, make_api
from tickwork.config import Settings
from tickwork.store.models import RunStatus
from tickwork.store.runs import insert_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ADMIN_EXAMPLES = 30
VIEWER_EXAMPLES = 10
#: The whole run (both tokens, every operation) must stay under this.
BUDGET_SECONDS = 60
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def api(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[Api]:
    on_mariadb = cluster_settings.model_copy(update={"broker_url": "memory://"})
    yield from make_api(on_mariadb, mysql_engine)


def _operations(api: Api) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app, headers=api.viewer)
    return [result.ok() for result in schema.get_all_operations()]


def _run(operation: Any, headers: dict[str, str], examples: int, seen: list[int], *, viewer: bool) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        seen.append(response.status_code)
        if viewer and operation.method.upper() in WRITES:
            assert response.status_code in (403, 422), (operation.label, response.status_code)
            if response.status_code == 422:
                assert response.json()["detail"][0]["field"] == "body", response.text

    check()


def test_no_server_error_on_mariadb_with_admin_and_viewer_tokens(api: Api) -> None:
    job = api.create()
    other = api.create(name="other", cronExpression="*/10 * * * * *")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for job_id in (job["id"], other["id"]):
        insert_run(api.engine, job_id=job_id, scheduled_for=when, status=RunStatus.DEAD, error="boom")
    operations = _operations(api)
    assert len(operations) >= 20
    started = time.monotonic()

    jobs_before = api.count_jobs()
    runs_before = api.count_runs()
    viewer_statuses: list[int] = []
    for operation in operations:
        _run(operation, api.viewer, VIEWER_EXAMPLES, viewer_statuses, viewer=True)
    assert (api.count_jobs(), api.count_runs()) == (jobs_before, runs_before)  # the viewer wrote nothing
    assert 403 in viewer_statuses and 200 in viewer_statuses

    admin_statuses: list[int] = []
    for operation in operations:
        _run(operation, api.admin, ADMIN_EXAMPLES, admin_statuses, viewer=False)
    assert 422 in admin_statuses and {200, 201} & set(admin_statuses)
    assert not [s for s in viewer_statuses + admin_statuses if s >= 500]
    assert time.monotonic() - started < BUDGET_SECONDS
    # The API still answers after whatever the run stored.
    assert api.client.get("/jobs?limit=500", headers=api.viewer).status_code == 200
    assert (
        api.client.post("/jobs", json={**SEED, "name": "after-the-run"}, headers=api.admin).status_code == 201
    )
