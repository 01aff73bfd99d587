"""Issue 14 on SQLite (the embedded mode's database): tag filter, backfill, idempotent trigger,
ETag and the audit trail through the API with the in-process broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tickwork.api import create_app
from tickwork.api.auth import create_token
from tickwork.config import load_settings
from tickwork.config.settings import resolve_auth_secret
from tickwork.store.engine import make_engine, upgrade

pytestmark = pytest.mark.unit


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    engine = make_engine(url)
    cfg = resolve_auth_secret(load_settings(database_url=url, broker_url="memory://"))
    app = create_app(cfg, engine=engine)
    with TestClient(app) as c:
        yield c, {"Authorization": f"Bearer {create_token(cfg, 'admin')}"}
    engine.dispose()


def test_the_new_operations_work_on_sqlite(client: tuple[TestClient, dict[str, str]]) -> None:
    c, admin = client
    base = {"handlerType": "http", "handlerData": "http://127.0.0.1:9/x", "cronExpression": "0 0 * * * *"}
    job = c.post(
        "/jobs", json={**base, "name": "a", "tags": ["x_y"], "timezone": "America/New_York"}, headers=admin
    )
    c.post("/jobs", json={**base, "name": "b", "tags": ["xay"]}, headers=admin)
    jid = job.json()["id"]
    assert [j["name"] for j in c.get("/jobs?tag=x_y", headers=admin).json()["items"]] == ["a"]
    # 2025-11-02 in New York has 25 hours; the repeated 01:00 fires once: 24 hourly fires.
    fill = c.post(
        f"/jobs/{jid}/backfill",
        json={"start": "2025-11-02T00:00:00-04:00", "end": "2025-11-03T00:00:00-05:00"},
        headers=admin,
    )
    assert fill.status_code == 202 and fill.json() == {"fires": 24, "skippedExisting": 0}
    assert c.post(
        f"/jobs/{jid}/backfill",
        json={"start": "2025-11-02T00:00:00-04:00", "end": "2025-11-03T00:00:00-05:00"},
        headers=admin,
    ).json() == {"fires": 0, "skippedExisting": 24}
    first = c.post(f"/jobs/{jid}/trigger", headers={**admin, "Idempotency-Key": "k"}).json()
    assert (
        c.post(f"/jobs/{jid}/trigger", headers={**admin, "Idempotency-Key": "k"}).json()["id"] == first["id"]
    )
    tag = c.get(f"/jobs/{jid}", headers=admin).headers["ETag"]
    assert (
        c.patch(f"/jobs/{jid}", json={"retryCount": 1}, headers={**admin, "If-Match": tag}).status_code == 200
    )
    assert (
        c.patch(f"/jobs/{jid}", json={"retryCount": 2}, headers={**admin, "If-Match": tag}).status_code == 412
    )
    kinds = [e["kind"] for e in c.get(f"/jobs/{jid}/events", headers=admin).json()["items"]]
    assert kinds == ["job.updated", "job.triggered", "job.backfilled", "job.backfilled", "job.created"]
