"""Two leaders at once: the leading ``tickwork scheduler`` is paused (SIGSTOP) for longer than the
lease TTL, a standby takes the lease, and the paused one resumes (SIGCONT) mid-act.

Guarantee 1 of docs/design.md: safety never depends on Redis alone. The pause is timed just before a
fire instant, so the paused leader is most likely between its commit and its publish (or inside
its transaction): when it resumes it carries on with what it was doing while the other node
leads. Afterwards every (job, second) of the window has exactly one attempt-1 row, SUCCESS, and
each job's executions (lines written by the job) equal its SUCCESS rows.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from tests.conftest import settings_env, tickwork_cmd
from tests.worker_helpers import terminate_all, wait_for, worker_processes
from tickwork.config import Settings
from tickwork.keys import leader_key
from tickwork.spec import JobSpec
from tickwork.store.jobs import create_job
from tickwork.store.models import jobs_table, runs_table

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(150)]

JOBS = 30
START_TIMEOUT = 60.0
LEASE_SLACK = 2.0
PAUSE = 5.0  # longer than the lease TTL (3 s)
AFTER = 8.0


def holder(client: redis.Redis, settings: Settings) -> str | None:
    raw = client.get(leader_key(settings.namespace))
    return raw.decode().split(" ", 1)[0] if raw else None


def test_paused_leader_whose_lease_expired_does_not_double_fire(
    cluster_settings: Settings, mysql_engine: Engine, tmp_path: Path
) -> None:
    settings = cluster_settings
    assert settings.leader_ttl_ms / 1000 < PAUSE
    marker = tmp_path / "executions.txt"
    for i in range(JOBS):
        create_job(
            mysql_engine,
            JobSpec(
                name=f"pause-{i}",
                cron_expression="* * * * * *",
                handler_type="python",
                handler_data="tw_record",
                parameters={"path": str(marker), "label": f"pause-{i}"},
            ),
        )
    env = settings_env(settings, log_level="INFO")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[Any] = []
    client = redis.Redis.from_url(settings.redis_url or "")
    stopped: subprocess.Popen[bytes] | None = None
    with worker_processes(settings, tmp_path, 2, threads=4):
        started = time.time()
        try:
            for i in range(2):
                log = open(tmp_path / f"node-{i}.log", "wb")  # noqa: SIM115 - closed below
                logs.append(log)
                procs[f"node-{i}"] = subprocess.Popen(
                    tickwork_cmd("scheduler", "--node-id", f"node-{i}"),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            # A deadline for a slow, busy machine, not a fixed warm-up: a leader, and its fires.
            wait_for(lambda: holder(client, settings) in procs, START_TIMEOUT, 0.05, "a leader")
            wait_for(
                lambda: marker.exists() and len(marker.read_text().splitlines()) >= 2 * JOBS,
                START_TIMEOUT,
                0.1,
                "two seconds of fires executed",
            )
            leader = holder(client, settings)
            assert leader in procs
            started = time.time()
            # Just before a fire instant: the leader has written (or is writing) that second's
            # rows and waits for the instant to publish them.
            time.sleep(math.ceil(time.time()) - time.time() - 0.01)
            stopped = procs[leader]
            stopped.send_signal(signal.SIGSTOP)
            stop_time = time.time()
            successor = None
            # Paused for PAUSE at least, and until the standby took the lease (a busy machine may
            # take longer than TTL + one renewal to run the standby's renewal).
            while time.time() - stop_time < PAUSE or (successor is None and time.time() - stop_time < 30):
                current = holder(client, settings)
                if successor is None and current is not None and current != leader:
                    successor, lease_gap = current, time.time() - stop_time
                time.sleep(0.02)
            assert successor is not None, f"nobody took the lease from the paused {leader}"
            stopped.send_signal(signal.SIGCONT)
            stopped = None
            resumed = time.time()
            time.sleep(AFTER)
            holder_at_end = holder(client, settings)
        finally:
            if stopped is not None:
                stopped.send_signal(signal.SIGCONT)
            end_time = time.time()
            codes = terminate_all(procs)
            for log in logs:
                log.close()
            client.close()
        # Let the workers finish every published attempt (no scheduler republishes any more).
        deadline = time.time() + 20
        while time.time() < deadline:
            with mysql_engine.connect() as conn:
                active = conn.execute(
                    select(runs_table.c.id)
                    .where(
                        (runs_table.c.status == "RUNNING")
                        | ((runs_table.c.status == "PENDING") & runs_table.c.enqueued_at.is_not(None))
                    )
                    .limit(1)
                ).first()
            if active is None:
                break
            time.sleep(0.2)

    log_of = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in procs}
    assert codes == dict.fromkeys(procs, 0), (codes, log_of)
    with mysql_engine.connect() as conn:
        # The workers also register their @job functions as (unscheduled) jobs: only ours count.
        names = {
            row.id: row.name
            for row in conn.execute(select(jobs_table.c.id, jobs_table.c.name))
            if row.name.startswith("pause-")
        }
        rows = list(conn.execute(select(runs_table)).mappings())
    first = datetime.fromtimestamp(math.ceil(started + 1), UTC)
    last = datetime.fromtimestamp(math.floor(end_time - 1), UTC)
    window = [r for r in rows if first <= r["scheduled_for"] <= last]
    per_fire = Counter((r["job_id"], r["scheduled_for"]) for r in window)
    seconds = int((last - first).total_seconds()) + 1
    expected = {(job_id, first.timestamp() + s) for job_id in names for s in range(seconds)}
    got = {(job_id, when.timestamp()) for job_id, when in per_fire}
    republished = {name: text.count("republishing") for name, text in log_of.items()}
    # Messages a worker dropped because the attempt was already claimed: the resumed ex-leader's
    # stale publish (when the pause caught it between commit and publish).
    worker_logs = [p.read_text(errors="replace") for p in tmp_path.glob("worker*.log")]
    skipped = sum(text.count("is already claimed or finished") for text in worker_logs)
    print(
        f"\npaused {leader} for {PAUSE} s, {successor} took the lease after {lease_gap:.2f} s; "
        f"holder at the end {holder_at_end}; window {seconds} s x {JOBS} jobs = {len(window)} fires; "
        f"'republishing' log lines per node {republished}; duplicate messages skipped {skipped}; "
        f"statuses {Counter(r['status'] for r in rows)}"
    )
    # The promise: a standby takes an expired lease at its next renewal (TTL + one renewal
    # interval); the slack is for a busy machine's thread scheduling.
    assert lease_gap <= (settings.leader_ttl_ms + settings.leader_renew_ms) / 1000 + LEASE_SLACK
    assert "no longer leader" in log_of[leader], log_of[leader]  # it saw it lost the lease
    assert len(names) == JOBS
    assert sorted(expected - got)[:10] == [], f"{len(expected - got)} fires missing"
    assert got - expected == set()
    duplicates = {k: n for k, n in per_fire.items() if n > 1}
    assert duplicates == {}
    assert {r["attempt"] for r in rows} == {1}, Counter((r["attempt"], r["trigger"]) for r in rows)
    assert Counter(r["status"] for r in window) == {"SUCCESS": len(window)}, Counter(
        (r["status"], r["scheduled_for"].time()) for r in window if r["status"] != "SUCCESS"
    )
    # Each job, not only the total: executions written by the job == its SUCCESS rows.
    executions = Counter(line.split()[0] for line in marker.read_text().splitlines())
    succeeded = Counter(names[r["job_id"]] for r in rows if r["status"] == "SUCCESS")
    diff = {n: (executions[n], succeeded[n]) for n in names.values() if executions[n] != succeeded[n]}
    assert diff == {}, f"(executions, SUCCESS rows) per job that differ: {diff}"
    assert sum(executions.values()) >= JOBS * seconds
    assert resumed - stop_time >= PAUSE
