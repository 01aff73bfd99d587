"""``tickwork dev`` as a real process: the README's curl creates the seed-style job, it calls a
loopback server every second, its runs appear over HTTP; after SIGKILL and a restart the job and
its history are still there and it keeps running. And the README's quick start itself: a fresh
directory, ``scripts/http_target.py``, the seed curl, runs that succeed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SEED, tickwork_cmd
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
    dev = Dev(tmp_path)  # a fresh SQLite file: `tickwork dev` applies the migrations itself
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


def test_dev_on_a_busy_port_exits_1_naming_it(tmp_path: Path) -> None:
    env = dev_env(tmp_path)
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
    # The input is well-formed; the machine's state conflicts with it (like a duplicate job name).
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"tickwork: cannot listen on 127.0.0.1:{port} (--port or TICKWORK_API_PORT): Address already in use"
    )
    assert not (tmp_path / "tickwork.db").exists()  # refused before the database was touched


def test_dev_without_migrations_refuses_a_fresh_sqlite_file(tmp_path: Path) -> None:
    result = subprocess.run(
        tickwork_cmd("dev", "--port", "0", "--no-migrate"),
        env=dev_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "has no tickwork schema" in result.stderr and "Traceback" not in result.stderr


def test_readme_quick_start_with_the_http_target_script(tmp_path: Path) -> None:
    """README: start dev (fresh directory), start scripts/http_target.py, run the seed curl, watch."""
    script = ROOT / "scripts" / "http_target.py"
    served = subprocess.Popen(
        [sys.executable, str(script), "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    dev: Dev | None = None
    try:
        assert served.stdout is not None
        first = served.stdout.readline()
        assert first.startswith("http_target: listening on http://127.0.0.1:"), first
        target_url = first.split()[-1]
        echo = httpx.post(f"{target_url}/post", content=b"{}", timeout=10)
        assert echo.status_code == 200
        assert echo.json() == {"ok": True, "method": "POST", "path": "/post", "bytes": 2}

        dev = Dev(tmp_path)
        seed = json.dumps(SEED, separators=(",", ":"))  # the README's -d, byte for byte
        assert seed in (ROOT / "README.md").read_text()
        curl = subprocess.run(
            ["curl", "-s", "-X", "POST", f"{dev.url}/jobs", "-H", f"Authorization: Bearer {dev.token}",
             "-H", "Content-Type: application/json", "-d", seed],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        created = json.loads(curl.stdout)
        assert {k: created[k] for k in SEED} == SEED and created["id"] >= 1
        # The seed fires at second 0 of each minute; a per-second twin shows runs without waiting.
        twin = {**SEED, "name": "every-second", "cronExpression": "* * * * * *"}
        twin["handlerData"] = f"{target_url}/post"
        job = httpx.post(f"{dev.url}/jobs", json=twin, headers=dev.headers, timeout=10).json()
        wait_for_successes(dev, job["id"], 2)
        runs = httpx.get(f"{dev.url}/jobs/{job['id']}/runs", headers=dev.headers, timeout=10).json()
        assert "SUCCESS" in {r["status"] for r in runs["items"]}
    finally:
        if dev is not None:
            dev.terminate()
        served.send_signal(signal.SIGTERM)
        _out, err = served.communicate(timeout=10)
    assert served.returncode == 0
    assert "POST /post (2 bytes) -> 200" in err  # one line per request
    assert err.count("-> 200") >= 3
