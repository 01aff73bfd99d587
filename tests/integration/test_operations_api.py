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
