"""Issue 10.2 and 10.3: an http attempt is bounded in memory and in time.

The memory tests run the http actor's request function in a fresh process and read that
process's peak RSS (``VmHWM``) before and after one request: a 96 MiB body, and a gzip bomb
that inflates to 96 MiB. Before the fix the first one raised a worker's peak RSS by ~450 MiB.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT
from tests.security.hostile_server import TRICKLE_INTERVAL, HostileServer, hostile_server
from tickwork.actors.http import BoundedDecoder, http_request
from tickwork.api.auth import create_token
from tickwork.config import load_settings
from tickwork.embedded import build
from tickwork.middleware.attempt import AttemptTimeout, JobFailed
from tickwork.store.engine import make_engine, upgrade
from tickwork.store.models import RunStatus
from tickwork.store.runs import get_run

pytestmark = pytest.mark.security

MIB = 1024 * 1024
#: The issue's bound: a 96 MiB response raises the worker's peak RSS by less than this.
MAX_RSS_GROWTH = 16 * MIB

PEAK_RSS_SCRIPT = """
import asyncio, json, sys
from tickwork.actors.http import http_request
from tickwork.config import load_settings

def peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")

async def main() -> None:
    settings = load_settings()
    await http_request(settings, sys.argv[1])  # warm up: imports, the client pool, the loop
    before = peak_rss()
    try:
        output = (await http_request(settings, sys.argv[2])).output
    except Exception as exc:
        output = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"before": before, "after": peak_rss(), "output_bytes": len(output.encode())}))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with hostile_server() as served:
        yield served


def peak_rss_growth(server: HostileServer, path: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, f"{server.url}/small", f"{server.url}{path}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    measured: dict[str, Any] = json.loads(result.stdout)
    measured["growth"] = measured["after"] - measured["before"]
    print(f"{path}: peak RSS {measured['before'] / MIB:.1f} -> {measured['after'] / MIB:.1f} MiB")
    return measured


@pytest.mark.parametrize("path", ["/big", "/bomb"])
def test_a_96_mib_response_barely_raises_peak_rss(server: HostileServer, path: str) -> None:
    measured = peak_rss_growth(server, path)
    assert measured["growth"] < MAX_RSS_GROWTH, measured
    assert 60_000 < measured["output_bytes"] <= 65536  # the output limit, reached and kept


def test_reading_stops_at_the_output_limit() -> None:
    settings = load_settings(output_max_bytes=1024)
    with hostile_server() as served:
        big = asyncio.run(http_request(settings, f"{served.url}/big"))
        bomb = asyncio.run(http_request(settings, f"{served.url}/bomb")).output
    assert big.status == 200
    output = big.output
    assert len(output.encode()) <= 1024 and output.endswith("x")
    assert len(bomb.encode()) <= 1024 and bomb.endswith("\x00")


def test_the_bounded_decoder_inflates_no_further_than_asked() -> None:
    from tests.security.hostile_server import gzip_bomb

    bomb = gzip_bomb()
    decoder = BoundedDecoder("gzip")
    assert len(decoder.decode(bomb, 1000)) == 1000
    assert decoder.decode(b"", 0) == b""
    # deflate both ways servers send it (zlib-wrapped and raw), identity and unknown encodings.
    import zlib

    wrapped = zlib.compress(b"hello" * 10)
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_data = raw.compress(b"hello" * 10) + raw.flush()
    assert BoundedDecoder("deflate").decode(wrapped, 12) == b"hellohellohe"
    assert BoundedDecoder("deflate").decode(raw_data, 7) == b"hellohe"
    assert BoundedDecoder("identity").decode(b"abcdef", 3) == b"abc"
    assert BoundedDecoder("br").decode(b"abcdef", 4) == b"abcd"
    with pytest.raises(JobFailed, match="cannot decode"):
        BoundedDecoder("gzip").decode(b"not gzip at all", 100)


def test_a_trickling_server_cannot_hold_an_attempt_past_its_deadline() -> None:
    settings = load_settings(http_timeout_seconds=1.5)
    with hostile_server() as served:
        started = time.monotonic()
        with pytest.raises(AttemptTimeout) as timed_out:
            asyncio.run(http_request(settings, f"{served.url}/trickle"))
        elapsed = time.monotonic() - started
        # The job's own timeoutSeconds wins over the setting.
        started_own = time.monotonic()
        with pytest.raises(AttemptTimeout):
            asyncio.run(http_request(settings, f"{served.url}/trickle", timeout=0.5))
        elapsed_own = time.monotonic() - started_own
    assert str(timed_out.value) == "timeout after 1.5 s"
    assert 1.5 <= elapsed < 1.5 + 4 * TRICKLE_INTERVAL + 1, elapsed  # each read took 0.25 s
    assert 0.5 <= elapsed_own < 1.5, elapsed_own


def test_a_worker_fails_a_trickling_attempt_after_tickwork_http_timeout_seconds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    settings = load_settings(
        database_url=url, broker_url="memory://", namespace="twsecdeadline", http_timeout_seconds=2
    )
    parts = build(settings, engine=make_engine(settings), worker_threads=1)
    parts.start()
    try:
        admin = {"Authorization": f"Bearer {create_token(parts.app.state.tickwork.settings, 'admin')}"}
        with hostile_server() as served, TestClient(parts.app) as client:
            body = {"name": "trickle", "handlerType": "http", "handlerData": f"{served.url}/trickle"}
            created = client.post("/jobs", json=body, headers=admin)  # no timeoutSeconds
            assert created.status_code == 201, created.text
            run_id = client.post(f"/jobs/{created.json()['id']}/trigger", headers=admin).json()["id"]
            started = time.monotonic()
            while (run := get_run(parts.engine, run_id)).status in ("PENDING", "RUNNING"):
                assert time.monotonic() - started < 30, run.status
                time.sleep(0.1)
            elapsed = time.monotonic() - started
    finally:
        parts.stop()
        parts.engine.dispose()
    assert run.status in (RunStatus.FAILED.value, RunStatus.DEAD.value), run.status
    assert run.error == "timeout after 2 s", run.error
    assert elapsed < 10, elapsed


def test_parameters_query_is_merged_into_the_urls_own_query() -> None:
    settings = load_settings()
    with hostile_server() as served:
        body = asyncio.run(
            http_request(settings, f"{served.url}/echo?a=1&keep=yes", query={"b": "2", "n": 3})
        ).output
    assert body == "/echo?a=1&keep=yes&b=2&n=3", body
