"""Issue 10.10 and 10.11: hostile ``--parameters`` exit 2 with one line; every answer of the API
and the dashboard carries the security headers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, SEED, tickwork_cmd
from tickwork.api import create_app
from tickwork.api.app import SECURITY_HEADERS
from tickwork.api.auth import create_token
from tickwork.config import load_settings
from tickwork.store.engine import make_engine, upgrade

pytestmark = pytest.mark.security


@pytest.mark.parametrize(
    ("parameters", "reason"),
    [
        ('{"json": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper than"),
        ('{"json": ' + "1" * 5000 + "}", "more than 4300 digits"),
        ('{"json": ' + "[" * 17 + "]" * 17 + "}", "nested deeper than 16 levels"),
        ('{"headers": {"X-Test": 5}}', "a header value must be a string"),
        ("[1", "not valid JSON"),
    ],
    ids=["5000-levels", "5000-digits", "17-levels", "header-number", "truncated"],
)
def test_hostile_parameters_exit_2_with_one_line(tmp_path: Path, parameters: str, reason: str) -> None:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env["PYTHONPATH"] = str(ROOT)
    env["TICKWORK_DATABASE_URL"] = url
    result = subprocess.run(
        tickwork_cmd(
            "jobs", "add", "--name", "x", "--http", "http://127.0.0.1:9/", "--parameters", parameters
        ),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert "--parameters" in line and reason in line, line
    assert "Traceback" not in result.stderr


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    settings = load_settings(database_url=url, auth_secret="headers-tests-secret-0123456789abcdef")
    engine = make_engine(url)
    app = create_app(settings, engine=engine, on_job_changed=lambda _job_id: None)
    app.state.admin = {"Authorization": f"Bearer {create_token(settings, 'admin')}"}
    with TestClient(app) as test_client:
        yield test_client
    engine.dispose()


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    admin = client.app.state.admin  # type: ignore[attr-defined]
    answers = {
        "dashboard page": client.get("/ui"),
        "dashboard script": client.get("/ui/static/app.js"),
        "dashboard redirect": client.get("/ui/", follow_redirects=False),
        "missing static": client.get("/ui/static/nope.js"),
        "health": client.get("/healthz"),
        "no token": client.get("/jobs"),
        "api": client.get("/jobs", headers=admin),
        "created": client.post("/jobs", json=SEED, headers=admin),
        "invalid": client.post("/jobs", json={**SEED, "name": ""}, headers=admin),
        "too large": client.post("/jobs", content=b"x" * 10**6, headers=admin),
        "unknown path": client.get("/nowhere"),
    }
    for label, response in answers.items():
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (label, name, response.headers)
    policy = answers["dashboard page"].headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy


def test_the_dashboard_has_no_inline_script_or_style() -> None:
    """The policy forbids them: the page and its script must not rely on them."""
    static = ROOT / "tickwork" / "api" / "static"
    page = (static / "index.html").read_text()
    assert "<script>" not in page and "style=" not in page and " on" + "click=" not in page
    script = (static / "app.js").read_text()
    assert 'setAttribute("style"' not in script and "innerHTML" not in script
    assert '{ style: "' not in script  # style values are objects assigned through the CSSOM
