"""``tickwork dev`` as a real process: the README's curl creates the seed-style job, it calls a
loopback server every second, its runs appear over HTTP; after SIGKILL and a restart the job and
its history are still there and it keeps running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, tickwork_cmd
from tests.http_target import Target, http_target

pytestmark = pytest.mark.chaos
START_TIMEOUT = 60


@pytest.fixture
def target() -> Iterator[Target]:
    with http_target() as served:
        yield served


def dev_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TICKWORK_DATABASE_URL"] = f"sqlite:///{tmp_path / 'tickwork.db'}"
    env["TICKWORK_NAMESPACE"] = f"twdev{os.getpid()}"
    return env


class Dev:
    """One ``tickwork dev --port 0`` process; reads its URL and token from stdout."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.log = (tmp_path / f"dev-{time.monotonic_ns()}.log").open("w")
        self.process = subprocess.Popen(
            tickwork_cmd("dev", "--port", "0", *extra),
            env=dev_env(tmp_path),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.url = ""
        self.token = ""
        deadline = time.monotonic() + START_TIMEOUT
        assert self.process.stdout is not None
        while time.monotonic() < deadline and not (self.url and self.token):
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"tickwork dev exited: {self.process.wait(5)}")
            if line.startswith("TICKWORK_URL="):
                self.url = line.strip().split("=", 1)[1]
            elif line.startswith("TICKWORK_TOKEN="):
                self.token = line.strip().split("=", 1)[1]
        assert self.url and self.token, "tickwork dev printed no URL and token"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.log.close()

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def successes(dev: Dev, job_id: int) -> int:
    items = httpx.get(f"{dev.url}/jobs/{job_id}/runs?limit=500", headers=dev.headers, timeout=10).json()[
        "items"
    ]
    return sum(1 for r in items if r["status"] == "SUCCESS")


def wait_for_successes(dev: Dev, job_id: int, count: int, timeout: float = 40) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = successes(dev, job_id)
        if seen >= count:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"only {seen} successful runs, wanted {count}")


def test_dev_runs_the_curl_job_and_survives_sigkill(tmp_path: Path, target: Target) -> None:
    subprocess.run(
        tickwork_cmd("db", "upgrade"),
        env=dev_env(tmp_path),
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    dev = Dev(tmp_path)
    try:
        assert httpx.get(f"{dev.url}/healthz", timeout=5).status_code == 200
        body = (
            '{"name":"test-http","cronExpression":"* * * * * *","handlerType":"http",'
            f'"handlerData":"{target.url}/post","retryCount":3,"retryBackoffSeconds":10}}'
        )
        curl = subprocess.run(
            ["curl", "-s", "-X", "POST", f"{dev.url}/jobs", "-H", f"Authorization: Bearer {dev.token}",
             "-H", "Content-Type: application/json", "-d", body],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        job = httpx.Response(200, content=curl.stdout).json()
        assert job["name"] == "test-http" and job["retryCount"] == 3
        wait_for_successes(dev, job["id"], 3)
    finally:
        dev.kill()

    before = target.count()
    dev = Dev(tmp_path)
    try:
        listed = httpx.get(f"{dev.url}/jobs", headers=dev.headers, timeout=10).json()
        assert [j["name"] for j in listed["items"]] == ["test-http"]
        history = successes(dev, job["id"])
        assert history >= 3
        wait_for_successes(dev, job["id"], history + 2)
        assert target.count() >= before + 2
    finally:
        dev.terminate()
    assert dev.process.returncode == 0  # SIGTERM: scheduler and worker stopped, clean exit


def test_dev_on_a_busy_port_exits_2_with_the_reason(tmp_path: Path) -> None:
    env = dev_env(tmp_path)
    subprocess.run(
        tickwork_cmd("db", "upgrade"), env=env, cwd=tmp_path, check=True, capture_output=True, timeout=60
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            tickwork_cmd("dev", "--port", str(port)),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert f"invalid --port: cannot listen on 127.0.0.1:{port}" in result.stderr
