"""Shared setup of the API tests: an app on the session's MariaDB, tokens, the seed job."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from tests.conftest import SEED
from tickwork.api import create_app
from tickwork.api.auth import create_token
from tickwork.config import Settings
from tickwork.store.engine import session_factory
from tickwork.store.models import Job, JobRun


@dataclass
class Api:
    client: TestClient
    settings: Settings
    engine: Engine
    admin: dict[str, str]
    viewer: dict[str, str]
    woken: list[int] = field(default_factory=list)

    def create(self, **overrides: Any) -> dict[str, Any]:
        response = self.client.post("/jobs", json={**SEED, **overrides}, headers=self.admin)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def count_jobs(self) -> int:
        with session_factory(self.engine)() as session:
            return int(session.scalar(select(func.count()).select_from(Job)) or 0)

    def count_runs(self) -> int:
        with session_factory(self.engine)() as session:
            return int(session.scalar(select(func.count()).select_from(JobRun)) or 0)


def make_api(settings: Settings, engine: Engine, *, hook: bool = True) -> Iterator[Api]:
    woken: list[int] = []
    app = create_app(settings, engine=engine, on_job_changed=woken.append if hook else None)
    with TestClient(app) as client:
        yield Api(
            client=client,
            settings=settings,
            engine=engine,
            admin={"Authorization": f"Bearer {create_token(settings, 'admin')}"},
            viewer={"Authorization": f"Bearer {create_token(settings, 'viewer')}"},
            woken=woken,
        )
    broker = app.state.tickwork.broker
    if broker is not None:
        broker.close()
