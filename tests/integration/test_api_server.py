"""``tickwork api`` as a real server process: health, a token from ``tickwork token``, the seed job."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine

from tests.conftest import settings_env, tickwork_cmd
from tests.integration.api_support import SEED
from tickwork.config import Settings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not come up")


@pytest.fixture
def server(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        tickwork_cmd("api", "--host", "127.0.0.1", "--port", str(port)),
        env=settings_env(cluster_settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_tickwork_api_serves_the_seed_job(server: str, cluster_settings: Settings) -> None:
    token = subprocess.run(
        tickwork_cmd("token", "--role", "admin"),
        env=settings_env(cluster_settings),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{server}/jobs", json=SEED, timeout=10).status_code == 401
    created = httpx.post(f"{server}/jobs", json=SEED, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    assert {k: created.json()[k] for k in SEED} == SEED
    ready = httpx.get(f"{server}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["checks"]["broker"] == "ok"
    assert httpx.get(f"{server}/openapi.json", timeout=10).status_code == 401
    document = httpx.get(f"{server}/openapi.json", headers=headers, timeout=10)
    assert document.json()["info"]["title"] == "tickwork"


@pytest.mark.parametrize("command", [["api", "--port", "0"], ["token", "--role", "admin"]])
def test_api_and_token_need_a_secret_in_distributed_mode(
    cluster_settings: Settings, command: list[str]
) -> None:
    env = settings_env(cluster_settings)
    del env["TICKWORK_AUTH_SECRET"]  # there is no built-in one to fall back to
    result = subprocess.run(
        tickwork_cmd(*command), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "tickwork: invalid TICKWORK_AUTH_SECRET: must be set for a shared deployment" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""  # no token printed
