"""Auth: no token, bad signature, expired, unknown role are 401; a viewer writing is 403."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
from sqlalchemy import Engine

from tests.integration.api_support import SEED, Api, make_api
from tickwork.api import create_app
from tickwork.api.auth import create_token
from tickwork.config import Settings, load_settings
from tickwork.config.settings import resolve_auth_secret
from tickwork.errors import ConfigError

pytestmark = pytest.mark.integration


@pytest.fixture
def api(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[Api]:
    yield from make_api(cluster_settings, mysql_engine)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _forged(api: Api, **claims: object) -> str:
    now = int(time.time())
    payload = {"sub": "x", "role": "admin", "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, api.settings.auth_secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/jobs"),
        ("post", "/jobs"),
        ("get", "/jobs/1"),
        ("get", "/runs"),
        ("get", "/runs/1"),
        ("get", "/dlq"),
        ("post", "/dlq/1/replay"),
        ("post", "/dlq/purge"),
        ("get", "/jobs/1/next-fires"),
    ],
)
def test_no_token_is_401(api: Api, method: str, path: str) -> None:
    response = api.client.request(method, path, json=SEED if method == "post" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert api.count_jobs() == 0


def test_bad_tokens_are_401_and_write_nothing(api: Api) -> None:
    wrong_key = jwt.encode(
        {"role": "admin", "exp": int(time.time()) + 600},
        "another-secret-of-32-bytes-length!",
        algorithm="HS256",
    )
    expired = create_token(api.settings, "admin", ttl_seconds=1)
    time.sleep(2.1)
    cases = {
        "bad signature": _bearer(wrong_key),
        "expired": _bearer(expired),
        "garbage": _bearer("not-a-jwt"),
        "unknown role": _bearer(_forged(api, role="root")),
        "no exp": _bearer(jwt.encode({"role": "admin"}, api.settings.auth_secret, algorithm="HS256")),
        "alg none": _bearer(
            jwt.encode({"role": "admin", "exp": int(time.time()) + 60}, None, algorithm="none")
        ),
        "basic scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    }
    for label, headers in cases.items():
        response = api.client.post("/jobs", json=SEED, headers=headers)
        assert response.status_code == 401, label
    assert "expired" in api.client.get("/jobs", headers=_bearer(expired)).json()["detail"]
    assert api.count_jobs() == 0


def test_viewer_reads_but_may_not_write(api: Api) -> None:
    job = api.create()
    assert api.client.get("/jobs", headers=api.viewer).status_code == 200
    assert api.client.get(f"/jobs/{job['id']}", headers=api.viewer).status_code == 200
    writes = [
        ("post", "/jobs", {**SEED, "name": "v"}),
        ("put", f"/jobs/{job['id']}", {**SEED, "name": "v"}),
        ("patch", f"/jobs/{job['id']}", {"retryCount": 1}),
        ("delete", f"/jobs/{job['id']}", None),
        ("post", f"/jobs/{job['id']}/pause", None),
        ("post", f"/jobs/{job['id']}/resume", None),
        ("post", f"/jobs/{job['id']}/trigger", None),
        ("post", "/dlq/1/replay", None),
        ("post", "/dlq/purge", None),
        ("delete", "/dlq", None),
    ]
    for method, path, body in writes:
        response = api.client.request(method, path, json=body, headers=api.viewer)
        assert response.status_code == 403, (method, path, response.text)
    after = api.client.get(f"/jobs/{job['id']}", headers=api.viewer).json()
    assert after == job
    assert api.count_jobs() == 1 and api.count_runs() == 0


def test_health_endpoints_need_no_token(api: Api) -> None:
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/readyz").status_code == 200
    assert api.client.get("/metrics").status_code == 200


def test_the_openapi_document_needs_a_token(api: Api) -> None:
    response = api.client.get("/openapi.json")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert api.client.get("/openapi.json", headers=_bearer("not-a-jwt")).status_code == 401
    for headers in (api.viewer, api.admin):
        document = api.client.get("/openapi.json", headers=headers)
        assert document.status_code == 200 and document.json()["info"]["title"] == "tickwork"
    # Swagger UI and ReDoc would fetch the document without a token: not served.
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert api.client.get(path).status_code == 404, path


def test_the_dashboard_shell_is_open_and_its_data_is_not(api: Api) -> None:
    page = api.client.get("/ui")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert api.client.get("/ui/static/app.js").status_code == 200
    for path in ("/dashboard/jobs", "/cluster", "/stats/timeline"):
        assert api.client.get(path).status_code == 401, path
        assert api.client.get(path, headers=api.viewer).status_code == 200, path


def test_a_shared_deployment_needs_a_secret_of_its_own(
    cluster_settings: Settings, mysql_engine: Engine
) -> None:
    default = cluster_settings.model_copy(update={"auth_secret": ""})
    for settings in (
        default,
        default.model_copy(update={"broker_url": "memory://"}),  # MySQL alone is shared
        default.model_copy(update={"database_url": "sqlite:///x.db"}),  # so is RabbitMQ alone
    ):
        with pytest.raises(ConfigError) as refused:
            create_app(settings, engine=mysql_engine)
        assert refused.value.field == "TICKWORK_AUTH_SECRET"
        assert "must be set for a shared deployment" in refused.value.reason
        with pytest.raises(ConfigError):
            resolve_auth_secret(settings)
    # The embedded mode (in-memory SQLite, in-process broker) gets a random secret of its own.
    embedded = load_settings(database_url="sqlite:///:memory:", broker_url="memory://")
    assert embedded.auth_secret == ""
    create_app(embedded, engine=mysql_engine)
    first, second = resolve_auth_secret(embedded), resolve_auth_secret(embedded)
    assert len(first.auth_secret) >= 32 and first.auth_secret != second.auth_secret


def test_tokens_use_the_configured_secret(api: Api) -> None:
    token = create_token(api.settings, "viewer", ttl_seconds=60, subject="alice")
    claims = jwt.decode(token, api.settings.auth_secret, algorithms=["HS256"])
    assert claims["role"] == "viewer" and claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 60
