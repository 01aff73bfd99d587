"""Issue 10.5 and 10.9: no credential reaches a log line or a ``viewer``; input cannot forge a
log line; tokens without ``sub`` or with a non-numeric ``exp`` are refused.

The end-to-end test runs a failing http job carrying credentials in every place an http job can
carry them through a real (embedded) worker, with the root logger at DEBUG so that Dramatiq's own
lines (which print the message's arguments) are all formatted, in both formats.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import jwt
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, tickwork_cmd
from tests.security.hostile_server import hostile_server
from tickwork.api.auth import create_token
from tickwork.config import load_settings
from tickwork.config.logging import JsonFormatter, TextFormatter
from tickwork.embedded import build
from tickwork.redaction import MASK, redact_http_parameters, redact_text, redact_url
from tickwork.store.engine import make_engine, upgrade
from tickwork.store.runs import get_run

pytestmark = pytest.mark.security

SECRETS = ("pa55word", "SEKRIT1", "SEKRIT2", "SEKRIT3", "SEKRIT4", "SEKRIT5", "SEKRIT6", "SEKRIT7")


def job_with_credentials(base_url: str) -> dict[str, Any]:
    host = base_url.removeprefix("http://")
    return {
        "name": "leaky",
        "handlerType": "http",
        "handlerData": f"http://admin:pa55word@{host}/fail?apikey=SEKRIT1&page=2",
        "parameters": {
            "method": "POST",
            "headers": {
                "Authorization": "Bearer SEKRIT2",
                "X-Api-Key": "SEKRIT3",
                "Cookie": "sid=SEKRIT4",
                "Proxy-Authorization": "Basic SEKRIT7",
                "Accept": "text/plain",
            },
            "query": {"access_token": "SEKRIT5", "lang": "en"},
            "json": {"user": "bob", "password": "SEKRIT6"},
        },
    }


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Every record at DEBUG, through the text and the JSON formatter."""
    text, data = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(text), logging.StreamHandler(data)]
    handlers[0].setFormatter(TextFormatter())
    handlers[1].setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield text, data
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(level)


def test_a_failing_http_job_logs_no_credentials_and_a_viewer_sees_them_masked(
    tmp_path: Path, captured: tuple[io.StringIO, io.StringIO]
) -> None:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    settings = load_settings(database_url=url, broker_url="memory://", namespace="twseclogs")
    parts = build(settings, engine=make_engine(settings), worker_threads=1)
    parts.start()
    try:
        resolved = parts.app.state.tickwork.settings
        admin = {"Authorization": f"Bearer {create_token(resolved, 'admin')}"}
        viewer = {"Authorization": f"Bearer {create_token(resolved, 'viewer')}"}
        with hostile_server() as served, TestClient(parts.app) as client:
            created = client.post("/jobs", json=job_with_credentials(served.url), headers=admin)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            run_id = client.post(f"/jobs/{job_id}/trigger", headers=admin).json()["id"]
            deadline = time.monotonic() + 30
            while (run := get_run(parts.engine, run_id)).status in ("PENDING", "RUNNING"):
                assert time.monotonic() < deadline, run.status
                time.sleep(0.1)
            assert run.error == "HTTP 500 Internal Server Error", run.error
            # The request itself carried every credential: they are the job's to send.
            [(target, headers)] = served.requests
            assert "apikey=SEKRIT1" in target and "access_token=SEKRIT5" in target
            assert headers["X-Api-Key"] == "SEKRIT3"  # (httpx sends the userinfo as Basic auth)

            as_admin = client.get(f"/jobs/{job_id}", headers=admin).json()
            as_viewer = client.get(f"/jobs/{job_id}", headers=viewer).json()
            # (@job functions other tests imported register themselves here too: pick ours.)
            [listed] = [j for j in client.get("/jobs", headers=viewer).json()["items"] if j["id"] == job_id]
            rows = client.get("/dashboard/jobs", headers=viewer).json()["items"]
            [dashboard] = [row for row in rows if row["id"] == job_id]
    finally:
        parts.stop()
        parts.engine.dispose()

    text, data = captured[0].getvalue(), captured[1].getvalue()
    # Dramatiq's own lines are there (with the message's arguments), each one redacted.
    assert "tickwork_http(url=" in text and "tickwork_http(url=" in data
    for secret in SECRETS:
        assert secret not in text, (secret, [line for line in text.splitlines() if secret in line])
        assert secret not in data, secret
    assert f"'Authorization': '{MASK}'" in text

    assert as_admin["handlerData"].startswith("http://admin:pa55word@")
    assert as_admin["parameters"]["headers"]["X-Api-Key"] == "SEKRIT3"
    for seen in (as_viewer, listed):
        assert "SEKRIT" not in json.dumps(seen) and "pa55word" not in json.dumps(seen), seen
        assert seen["handlerData"].endswith("/fail?apikey=***&page=2")
        assert seen["parameters"]["headers"]["Accept"] == "text/plain"  # only credentials are masked
        assert seen["parameters"]["query"] == {"access_token": MASK, "lang": "en"}
        assert seen["parameters"]["json"] == {"user": "bob", "password": MASK}
    assert "pa55word" not in dashboard["handlerData"] and "SEKRIT1" not in dashboard["handlerData"]


def test_redaction_of_a_message_repr_urls_and_parameters() -> None:
    message = dramatiq.Message(
        queue_name="q",
        actor_name="tickwork_http",
        args=(),
        kwargs=job_with_credentials("http://h:1")["parameters"]
        | {"url": "http://u:pa55word@h/?apikey=SEKRIT1"},
        options={},
    )
    assert not any(secret in redact_text(str(message)) for secret in SECRETS)
    assert redact_url("https://u:p@h:8/x?token=1&q=2#f") == "https://***@h:8/x?token=***&q=2#f"
    assert redact_url("http://h/x?q=1") == "http://h/x?q=1"
    masked = redact_http_parameters({"headers": {"X-Auth-Token": "t", "Accept": "a"}, "body": "raw"})
    assert masked == {"headers": {"X-Auth-Token": MASK, "Accept": "a"}, "body": "raw"}
    # Python jobs' keyword arguments in a message repr, and free-text forms.
    assert "hunter2" not in redact_text("job(password='hunter2', user='bob')")
    assert "hunter2" not in redact_text('{"client_secret": "hunter2"}')
    assert "abc.def.ghi" not in redact_text("Authorization: Bearer abc.def.ghi")
    assert redact_text("missing bearer token") == "missing bearer token"
    assert redact_text("nothing to hide, page=2") == "nothing to hide, page=2"


def record(message: str, *args: Any) -> logging.LogRecord:
    return logging.LogRecord("tickwork.api.jobs", logging.INFO, __file__, 1, message, args, None)


def test_text_logs_escape_control_characters() -> None:
    forged = "alice\n2026-12-01T00:00:00.000Z INFO    tickwork.api.jobs: job deleted by admin (admin)"
    line = TextFormatter().format(record("job created by %s (%s)", forged, "admin"))
    assert "\n" not in line and "alice\\n2026" in line
    for control in ("\r", "\x1b[31m", "\x00", "\u2028", "\x85"):
        assert control not in TextFormatter().format(record("x%sy", control))
    # The JSON format escapes them by construction.
    assert "\n" not in JsonFormatter().format(record("a%sb", "\n"))


def test_a_traceback_still_follows_its_event() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        entry = record("failed")
        entry.exc_info = sys.exc_info()
    lines = TextFormatter().format(entry).splitlines()
    assert lines[0].endswith("tickwork.api.jobs: failed") and lines[-1] == "ValueError: boom"


def bearer(claims: dict[str, Any], secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims, secret)}"}


def test_tokens_need_a_printable_sub_and_a_numeric_exp(tmp_path: Path) -> None:
    from tickwork.api import create_app

    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    settings = load_settings(database_url=url, auth_secret="log-tests-secret-0123456789abcdef")
    secret = settings.auth_secret
    now = int(time.time())
    good = {"sub": "alice", "role": "admin", "iat": now, "exp": now + 600}
    cases = {
        "no sub": {k: v for k, v in good.items() if k != "sub"},
        "newline in sub": {**good, "sub": "alice\nINFO forged line"},
        "escape in sub": {**good, "sub": "\x1b[2Jalice"},
        "empty sub": {**good, "sub": ""},
        "numeric sub": {**good, "sub": 5},
        "long sub": {**good, "sub": "a" * 201},
        "string exp": {**good, "exp": str(now + 600)},
        "text exp": {**good, "exp": "never"},
        "bool exp": {**good, "exp": True},
        "role list": {**good, "role": ["admin"]},
    }
    with TestClient(create_app(settings)) as client:
        assert client.get("/jobs", headers=bearer(good, secret)).status_code == 200
        assert client.get("/jobs", headers=bearer({**good, "exp": now + 600.5}, secret)).status_code == 200
        for label, claims in cases.items():
            response = client.get("/jobs", headers=bearer(claims, secret))
            assert response.status_code == 401, (label, response.text)


def test_tickwork_token_refuses_a_subject_with_a_newline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env["PYTHONPATH"] = str(ROOT)
    env["TICKWORK_AUTH_SECRET"] = "cli-tests-secret-0123456789abcdef"
    result = subprocess.run(
        tickwork_cmd("token", "--subject", "alice\nforged"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "--subject" in result.stderr
