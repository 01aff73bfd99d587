"""A ``tickwork scheduler`` that dies by SIGKILL between committing a fire and publishing it.

Guarantee 2 of docs/design.md: the PENDING attempt row is an outbox, so a crash between the commit and
the publish loses nothing. The crashing node is a real scheduler process whose
``publish_batch`` (the name ``tickwork.scheduler.service`` imported from ``tickwork.messaging``)
SIGKILLs its own process: the first fire it makes is
committed and never published, and the node dies holding the leader lease. A second, normal
scheduler must take the lease once it expires, republish the attempt, and a real worker must run
it exactly once, as attempt 1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from tests.conftest import settings_env, tickwork_cmd
from tests.worker_helpers import wait_for, worker_processes
from tickwork.config import Settings
from tickwork.keys import leader_key
from tickwork.spec import JobSpec
from tickwork.store.jobs import create_job
from tickwork.store.models import runs_table, utcnow

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

#: A scheduler node whose publish is a SIGKILL of itself: it commits a fire, then dies.
CRASHER = """
import os, signal, sys
import tickwork.lifecycle as service

def die(*args, **kwargs):
    print("crasher: publish replaced by SIGKILL", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

# The name tickwork.lifecycle (publish after commit) sends a committed batch with.
if not hasattr(service, "publish_batch"):
    sys.exit("crasher: tickwork.lifecycle has no publish_batch to replace")
service.publish_batch = die
print("crasher: replaced service.publish_batch", flush=True)
from tickwork.cli import main
sys.exit(main(["scheduler", "--node-id", "crasher"]))
"""


class Procs:
    """Subprocesses of one test, each logging to its own file; stopped by :meth:`stop_all`."""

    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        self.env = settings_env(settings, log_level="INFO")
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Any] = []

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all()
        self.logs.append(log)
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def output(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for log in self.logs:
            log.close()


@pytest.fixture
def procs(cluster_settings: Settings, tmp_path: Path) -> Iterator[Procs]:
    p = Procs(cluster_settings, tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def holder(client: redis.Redis, settings: Settings) -> str | None:
    raw = client.get(leader_key(settings.namespace))
    return raw.decode().split(" ", 1)[0] if raw else None


def test_commit_then_crash_before_publish_loses_nothing(
    cluster_settings: Settings, mysql_engine: Engine, procs: Procs, tmp_path: Path
) -> None:
    settings = cluster_settings
    marker = tmp_path / "executions.txt"
    client = redis.Redis.from_url(settings.redis_url or "")
    ttl = settings.leader_ttl_ms / 1000
    renew = settings.leader_renew_ms / 1000

    def rows() -> list[Any]:
        with mysql_engine.connect() as conn:
            return list(conn.execute(select(runs_table).where(runs_table.c.job_id == job_id)).mappings())

    try:
        with worker_processes(settings, tmp_path, 1, threads=2):
            crasher = procs.start("crasher", [sys.executable, "-c", CRASHER])
            wait_for(
                lambda: crasher.poll() is not None or holder(client, settings) == "crasher",
                30,
                0.05,
                "the crasher to lead",
            )
            assert crasher.poll() is None, procs.output("crasher")
            run_at = utcnow() + timedelta(seconds=2)
            job_id = create_job(
                mysql_engine,
                JobSpec(
                    name="crash-before-publish",
                    run_at=run_at,
                    handler_type="python",
                    handler_data="tw_record",
                    parameters={"path": str(marker), "label": "crash"},
                ),
            ).id

            # The crasher fires the job (commit), then dies in its publish.
            try:
                code = crasher.wait(timeout=20)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the crasher did not crash:\n{procs.output('crasher')}") from None
            died = time.time()
            assert code == -signal.SIGKILL, procs.output("crasher")
            assert "publish replaced by SIGKILL" in procs.output("crasher")
            committed = rows()
            assert [(r["attempt"], r["status"], r["trigger"]) for r in committed] == [
                (1, "PENDING", "schedule")
            ], committed
            assert committed[0]["enqueued_at"] is None, "the row says it was published"
            assert committed[0]["scheduled_for"] == run_at, (committed[0]["scheduled_for"], run_at)
            # The dead node's lease is still on Redis, but with an expiry: it cannot block forever.
            left = client.pttl(leader_key(settings.namespace))
            print(f"\ncrasher died holding the lease: {holder(client, settings)}, pttl {left} ms")
            assert left == -2 or 0 < left <= settings.leader_ttl_ms
            time.sleep(1.0)
            assert not marker.exists(), "the attempt ran although nothing was published"

            survivor_started = time.time()
            procs.start("survivor", tickwork_cmd("scheduler", "--node-id", "survivor"))
            wait_for(
                lambda: holder(client, settings) == "survivor",
                ttl + renew + 20,  # the dead lease's TTL, a renewal, and the process start-up
                0.05,
                "the survivor to take the lease",
            )
            took_lease = time.time()
            # The sweep republishes an unpublished attempt ~2 s after it became due.
            final = wait_for(
                lambda: [r for r in rows() if r["status"] not in ("PENDING", "RUNNING")],
                30,
                0.1,
                "the committed attempt to finish",
            )
            finished = time.time()
            time.sleep(2.5)  # a few more sweeps: none may run it again
            after = rows()
            executions = marker.read_text().splitlines() if marker.exists() else []
    finally:
        client.close()

    print(
        f"survivor took the lease {took_lease - died:.2f} s after the crash "
        f"({took_lease - survivor_started:.2f} s after it started); "
        f"the attempt finished {finished - died:.2f} s after the crash"
    )
    assert [(r["attempt"], r["status"]) for r in final] == [(1, "SUCCESS")], final
    assert [(r["id"], r["attempt"], r["status"]) for r in after] == [(committed[0]["id"], 1, "SUCCESS")], (
        after
    )
    assert after[0]["enqueued_at"] is not None  # republished by the survivor's sweep
    assert [line.split()[0] for line in executions] == ["crash"], executions
    assert "republishing 1 unclaimed attempts" in procs.output("survivor"), procs.output("survivor")
