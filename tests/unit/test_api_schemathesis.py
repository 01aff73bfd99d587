"""Property-based: schemathesis drives every operation of the app's own OpenAPI document.

No response may be a 500, use an undocumented status code or content type, or break its
documented schema. Runs on SQLite with the in-process broker (no services), a bounded and
derandomized number of examples per operation.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tickwork.api import create_app
from tickwork.api.auth import create_token
from tickwork.config import load_settings
from tickwork.config.settings import resolve_auth_secret
from tickwork.spec import JobSpec
from tickwork.store.engine import make_engine, upgrade
from tickwork.store.jobs import create_job
from tickwork.store.models import RunStatus
from tickwork.store.runs import insert_run

pytestmark = pytest.mark.unit

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 30


def _build_app() -> Any:
    """The app on a fresh SQLite file with two jobs and a dead run (ids 1 and 2 exist)."""
    directory = Path(tempfile.mkdtemp(prefix="tickwork-schemathesis-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    url = f"sqlite:///{directory / 'tickwork.db'}"
    upgrade(url)
    engine = make_engine(url)
    cfg = resolve_auth_secret(load_settings(database_url=url, broker_url="memory://"))
    for name in ("alpha", "beta"):
        job = create_job(
            engine,
            JobSpec.model_validate(
                {
                    "name": name,
                    "cronExpression": "*/10 * * * * *",
                    "handlerType": "http",
                    "handlerData": "http://127.0.0.1:9/x",
                }
            ),
        )
        when = datetime(2026, 1, 1, tzinfo=UTC)
        insert_run(engine, job_id=job.id, scheduled_for=when, status=RunStatus.DEAD, error="boom")
    app = create_app(cfg, engine=engine)
    app.state.admin_token = create_token(cfg, "admin")
    return app


# Schemathesis reads the schema at collection time (its fixture-based loader does not work with
# this pytest), so the app is built when the module is imported.
APP = _build_app()
# The document needs a token like the rest of the API.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", APP, headers={"Authorization": f"Bearer {APP.state.admin_token}"}
)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_responses_match_the_schema(case: Any) -> None:
    headers = {"Authorization": f"Bearer {APP.state.admin_token}"}
    case.call_and_validate(headers=headers, checks=CHECKS)
