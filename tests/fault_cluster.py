"""A running tickwork cluster for fault tests: API, 2 schedulers, 2 workers as real processes.

:class:`FaultCluster` creates every-second jobs whose executions are appended to one file by
``tests.worker_jobs.tw_fire_log`` (one line per executed attempt: job label, run id, attempt,
scheduled time, wall time), starts the processes, and :meth:`FaultCluster.verify` checks what
the issue asks of every fault:

- no tickwork process exited (and each stops cleanly with exit code 0 afterwards);
- every scheduled second of every job in the window has exactly one fire row (attempt 1);
- no attempt is PENDING or RUNNING once the cluster has had time to recover and sweep;
- no attempt executed twice, and every SUCCESS row executed once (counted at the target);
- the API answers ``/readyz`` again.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import redis
from sqlalchemy import Engine, select

from tests.conftest import TEST_AUTH_SECRET, settings_env, tickwork_cmd
from tests.private_services import free_port
from tests.worker_helpers import WorkerProcess, wait_for
from tickwork.config import Settings, load_settings
from tickwork.keys import leader_key
from tickwork.middleware.heartbeat import HeartbeatStore
from tickwork.spec import JobSpec
from tickwork.store.jobs import create_job
from tickwork.store.models import runs_table

#: Deadlines are generous: two CPU burners beside the test must not make it fail.
START_TIMEOUT = 90.0
#: After a fault is healed: reconnects, a lease, the outbox grace, the heartbeat TTL, a sweep.
SETTLE_TIMEOUT = 120.0
#: Each execution works this long, so that some attempts are always RUNNING when a fault strikes.
JOB_SECONDS = 0.4
#: Settings of the cluster's processes (short so that recovery is quick to observe).
CLUSTER_ENV: dict[str, Any] = {
    "log_level": "INFO",
    "outbox_grace_seconds": 5,
    "heartbeat_ttl_seconds": 4,
    "heartbeat_interval_seconds": 0.5,
}


def cluster_settings_for(database_url: str, redis_url: str, amqp_url: str, namespace: str) -> Settings:
    return load_settings(
        database_url=database_url,
        broker_url=amqp_url,
        redis_url=redis_url,
        namespace=namespace,
        auth_secret=TEST_AUTH_SECRET,
        **CLUSTER_ENV,
    )


@dataclass
class Verdict:
    """What :meth:`FaultCluster.verify` found (printed by the tests, asserted on)."""

    seconds: int
    fires: int
    statuses: Counter[str]
    missing: list[tuple[str, datetime]] = field(default_factory=list)
    doubled: dict[tuple[str, datetime], int] = field(default_factory=dict)
    executions: int = 0
    executed_twice: dict[int, int] = field(default_factory=dict)
    fires_executed_twice: dict[tuple[str, str], int] = field(default_factory=dict)
    success_not_executed: list[int] = field(default_factory=list)
    recovery_seconds: float | None = None

    def summary(self) -> str:
        recovery = "n/a" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f} s"
        return (
            f"{self.seconds} s x jobs = {self.fires} fires {dict(self.statuses)}, "
            f"{self.executions} executions, recovery {recovery}"
        )


class FaultCluster:
    """API, two schedulers and two workers against ``settings``; per-node overrides allowed.

    Parameters:
      settings: the cluster's settings (its database must be migrated).
      engine: an engine on the same database, for the test's own reads.
      tmp_path: where logs and the executions file go.
      jobs: how many every-second jobs to create.
      scheduler_env: per scheduler node (``node-0``, ``node-1``), TICKWORK_* overrides (a proxy's URL).
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        tmp_path: Path,
        *,
        jobs: int = 10,
        scheduler_env: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.tmp_path = tmp_path
        self.marker = tmp_path / "executions.txt"
        self.scheduler_env = scheduler_env or {}
        self.labels: dict[int, str] = {}
        for i in range(jobs):
            job = create_job(
                engine,
                JobSpec(
                    name=f"fault-{i}",
                    cron_expression="* * * * * *",
                    handler_type="python",
                    handler_data="tw_fire_log",
                    parameters={"path": str(self.marker), "label": f"fault-{i}", "seconds": JOB_SECONDS},
                    retry_count=3,
                    retry_backoff_seconds=1,
                ),
            )
            self.labels[job.id] = job.name
        self.schedulers: dict[str, subprocess.Popen[bytes]] = {}
        self.workers: list[WorkerProcess] = []
        self.api: subprocess.Popen[bytes] | None = None
        self.api_port = free_port()
        self._logs: list[IO[bytes]] = []
        self.started_at = 0.0

    # -- processes --------------------------------------------------------------------------------

    def _popen(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        return subprocess.Popen(tickwork_cmd(*args), env=env, stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        """Start every process and wait until fires are executed."""
        self.started_at = time.time()
        self.workers = [
            WorkerProcess(self.settings, self.tmp_path / f"worker-{i}.log", threads=4, extra_env=CLUSTER_ENV)
            for i in range(2)
        ]
        for i in range(2):
            node = f"node-{i}"
            env = settings_env(self.settings, **{**CLUSTER_ENV, **self.scheduler_env.get(node, {})})
            self.schedulers[node] = self._popen(node, ["scheduler", "--node-id", node], env)
        self.api = self._popen(
            "api", ["api", "--port", str(self.api_port)], settings_env(self.settings, **CLUSTER_ENV)
        )
        store = HeartbeatStore.from_settings(self.settings)
        try:
            wait_for(lambda: len(store.alive_workers()) >= 2, START_TIMEOUT, 0.2, "two worker heartbeats")
        finally:
            store.close()
        wait_for(lambda: self.leader() in self.schedulers, START_TIMEOUT, 0.1, "a leader")
        wait_for(self.ready, START_TIMEOUT, 0.2, "the API to be ready")
        wait_for(lambda: len(self.executions()) >= 2 * len(self.labels), START_TIMEOUT, 0.2, "fires")

    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        procs = dict(self.schedulers)
        procs.update({f"worker-{i}": w.proc for i, w in enumerate(self.workers)})
        if self.api is not None:
            procs["api"] = self.api
        return procs

    def exited(self) -> dict[str, int | None]:
        """Processes that are no longer running, with their exit codes (should stay empty)."""
        return {name: p.poll() for name, p in self.processes().items() if p.poll() is not None}

    def leader(self) -> str | None:
        client = redis.Redis.from_url(self.settings.redis_url or "", socket_timeout=2)
        try:
            raw = client.get(leader_key(self.settings.namespace))
        except redis.RedisError:
            return None
        finally:
            client.close()
        return raw.decode().split(" ", 1)[0] if raw else None

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.api_port}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> dict[str, int]:
        """SIGTERM every process; their exit codes (0 is a clean stop)."""
        codes: dict[str, int] = {}
        for proc in [*self.schedulers.values(), self.api]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for name, proc in [*self.schedulers.items(), ("api", self.api)]:
            if proc is None:
                continue
            try:
                codes[name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(10)
        for i, worker in enumerate(self.workers):
            codes[f"worker-{i}"] = worker.terminate(30)
            worker.stop()
        for log in self._logs:
            log.close()
        self._logs = []
        return codes

    def logs(self) -> str:
        parts = []
        for path in sorted(self.tmp_path.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # -- what happened ---------------------------------------------------------------------------

    def executions(self) -> list[list[str]]:
        if not self.marker.exists():
            return []
        return [line.split() for line in self.marker.read_text().splitlines() if line.strip()]

    def rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(select(runs_table).where(runs_table.c.job_id.in_(list(self.labels)))).mappings()
            )

    def unsettled(self) -> int:
        """Attempts of our jobs still PENDING or RUNNING."""
        return sum(1 for r in self.rows() if r["status"] in ("PENDING", "RUNNING"))

    def wait_settled(self, since: float, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait until every fire up to ``since`` + 2 s is made and no attempt is unsettled."""
        first_after = datetime.fromtimestamp(math.ceil(since + 2), UTC)

        def settled() -> bool:
            rows = self.rows()
            made = {r["job_id"] for r in rows if r["scheduled_for"] >= first_after}
            busy = [
                r for r in rows if r["status"] in ("PENDING", "RUNNING") and r["scheduled_for"] < first_after
            ]
            return len(made) == len(self.labels) and not busy

        wait_for(settled, timeout, 0.5, "every fire made and every attempt settled after the fault")

    def verify(self, first: float, last: float, *, restored_at: float | None = None) -> Verdict:
        """Check the fires scheduled in ``[first, last]`` (epoch seconds); see the module doc."""
        start = datetime.fromtimestamp(math.ceil(first), UTC)
        end = datetime.fromtimestamp(math.floor(last), UTC)
        rows = [r for r in self.rows() if start <= r["scheduled_for"] <= end]
        seconds = int((end - start).total_seconds()) + 1
        firsts = Counter((r["job_id"], r["scheduled_for"]) for r in rows if r["attempt"] == 1)
        expected = {
            (job_id, datetime.fromtimestamp(start.timestamp() + s, UTC))
            for job_id in self.labels
            for s in range(seconds)
        }
        verdict = Verdict(seconds=seconds, fires=len(firsts), statuses=Counter(r["status"] for r in rows))
        verdict.missing = sorted((self.labels[j], t) for j, t in expected - set(firsts))
        verdict.doubled = {(self.labels[j], t): n for (j, t), n in firsts.items() if n > 1}
        ours = {r["id"] for r in rows}
        runs = Counter(int(line[1]) for line in self.executions() if len(line) >= 5 and int(line[1]) in ours)
        verdict.executions = sum(runs.values())
        verdict.executed_twice = {run: n for run, n in runs.items() if n > 1}
        per_fire = Counter(
            (line[0], line[3]) for line in self.executions() if len(line) >= 5 and int(line[1]) in ours
        )
        verdict.fires_executed_twice = {fire: n for fire, n in per_fire.items() if n > 1}
        verdict.success_not_executed = sorted(
            r["id"] for r in rows if r["status"] == "SUCCESS" and r["id"] not in runs
        )
        if restored_at is not None:
            on_time = [
                r["started_at"].timestamp()
                for r in rows
                if r["started_at"] is not None
                and r["scheduled_for"].timestamp() >= restored_at
                and (r["started_at"] - r["scheduled_for"]).total_seconds() <= 1.0
            ]
            if on_time:
                verdict.recovery_seconds = max(0.0, min(on_time) - restored_at)
        return verdict


def assert_survived(
    cluster: FaultCluster, verdict: Verdict, codes: dict[str, int], *, processes_killed: bool = False
) -> None:
    """The guarantees every fault test asserts (module doc), with the logs on failure.

    Unless a tickwork process was killed, no attempt fails either: an outage of a service is
    waited out, not turned into ``worker lost`` retries, so every fire executes exactly once.
    """
    context = f"{verdict.summary()}\n{cluster.logs()}"
    if not processes_killed:
        failed = {s: n for s, n in verdict.statuses.items() if s not in ("SUCCESS", "MISSED", "SKIPPED")}
        assert failed == {}, f"attempts failed: {failed}\n{context}"
        twice = list(verdict.fires_executed_twice.items())[:5]
        assert twice == [], f"fires executed twice: {twice}\n{context}"
    missing = verdict.missing
    assert missing == [], f"{len(missing)} fires missing, first {missing[:5]}\n{context}"
    assert verdict.doubled == {}, f"fires made twice: {list(verdict.doubled.items())[:5]}\n{context}"
    unsettled = {s: n for s, n in verdict.statuses.items() if s in ("PENDING", "RUNNING")}
    assert unsettled == {}, f"attempts not settled: {unsettled}\n{context}"
    assert verdict.executed_twice == {}, f"attempts executed twice: {verdict.executed_twice}\n{context}"
    assert verdict.success_not_executed == [], f"SUCCESS without an execution\n{context}"
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly: -15 is its clean stop.
    clean = {name: (-15 if name == "api" and code == -15 else 0) for name, code in codes.items()}
    assert codes == clean, f"exit codes {codes}\n{context}"
    assert "Finished server process" in (cluster.tmp_path / "api.log").read_text(), context


def report(name: str, verdict: Verdict, **extra: Any) -> None:
    """Print one line a reader (and the README's table) can take the figures from."""
    print(f"\nFAULT {name}: {verdict.summary()} {json.dumps(extra)}")
