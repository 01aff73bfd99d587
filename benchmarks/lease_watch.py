"""No false failover: a leader and a standby with the default lease settings, nothing killed.

Two ``tickwork scheduler`` processes run ``--schedules`` every-second cron jobs (1,000 fires/s by
default) for ``--minutes``; optional ``--burners`` busy-loop processes add CPU load on top of
whatever else the machine runs. The lease key is read every 20 ms: any change of its value
(another holder, or the same node taking it afresh) is a failover, and with no process killed
every one is a false one. At the end every (job, second) of the window must have exactly one
fire row: duplicates and misses are counted. The load average is sampled every 10 s.

    PYTHONPATH=. python benchmarks/lease_watch.py --minutes 10

Writes benchmarks/results/lease_watch.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from sqlalchemy import func, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.databases import create_database  # noqa: E402
from benchmarks.scheduling import AMQP, REDIS, cpu_model, tickwork_env  # noqa: E402
from benchmarks.worker_throughput import delete_keys, delete_queues  # noqa: E402
from tickwork.config import load_settings  # noqa: E402
from tickwork.keys import leader_key  # noqa: E402
from tickwork.store.engine import make_engine, upgrade  # noqa: E402
from tickwork.store.models import jobs_table, runs_table  # noqa: E402

BURN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--schedules", type=int, default=1000, help="every-second cron jobs")
    parser.add_argument("--burners", type=int, default=0, help="extra busy-loop processes")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lease_watch.json"))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    name, server, url = create_database("tw_lease")
    procs: list[subprocess.Popen[bytes]] = []
    burners: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(url)
        engine = make_engine(url)
        start_at = datetime.fromtimestamp(math.ceil(time.time()) + 6, UTC)
        now = datetime.now(UTC)
        rows = [
            {"name": f"lease-{i}", "cron_expression": "* * * * * *", "timezone": "UTC",
             "handler_type": "python", "handler_data": "bench.noop", "retry_count": 0,
             "retry_backoff_seconds": 10, "max_backoff_seconds": 3600, "queue": "default",
             "misfire_policy": "fire_once", "overlap_policy": "allow", "enabled": True,
             "source": "api", "next_fire_at": start_at, "version": 1, "created_at": now,
             "updated_at": now}
            for i in range(args.schedules)
        ]  # fmt: skip
        with engine.begin() as conn:
            for chunk in range(0, len(rows), 2000):
                conn.execute(insert(jobs_table), rows[chunk : chunk + 2000])
        env = tickwork_env(url, name)
        for i in range(2):
            log = open(out.with_name(f"lease_watch-{i}.log"), "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tickwork", "scheduler", "--node-id", f"n{i}"],
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
        seconds = args.minutes * 60
        for _ in range(args.burners):
            burners.append(subprocess.Popen([sys.executable, "-c", BURN.format(seconds=seconds + 10)]))
        client = redis.Redis.from_url(REDIS)
        time.sleep(max(0.0, start_at.timestamp() - time.time()))
        t0 = time.time()
        values: list[tuple[float, str | None]] = []
        loads: list[list[float]] = []
        last_load = 0.0
        while time.time() - t0 < seconds:
            raw = client.get(leader_key(name))
            value = raw.decode() if raw else None
            if not values or values[-1][1] != value:
                values.append((round(time.time() - t0, 3), value))
            if time.time() - last_load >= 10:
                last_load = time.time()
                loads.append([round(x, 2) for x in os.getloadavg()])
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a scheduler exited; see the lease_watch-*.log files")
            time.sleep(0.02)
        stop_time = time.time()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        client.close()
        first = datetime.fromtimestamp(math.ceil(t0) + 1, UTC)
        last = datetime.fromtimestamp(math.floor(stop_time) - 2, UTC)
        with engine.connect() as conn:
            per_fire = Counter(
                (r.job_id, r.scheduled_for)
                for r in conn.execute(
                    select(runs_table.c.job_id, runs_table.c.scheduled_for).where(
                        runs_table.c.scheduled_for >= first, runs_table.c.scheduled_for <= last
                    )
                )
            )
            jobs = conn.scalar(select(func.count()).select_from(jobs_table)) or 0
        expected = jobs * (int((last - first) / timedelta(seconds=1)) + 1)
        holders = [v for _, v in values]
        result = {
            "machine": os.uname().nodename,
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "measured_at": datetime.now(UTC).isoformat(),
            "minutes": args.minutes,
            "schedules": args.schedules,
            "burners": args.burners,
            "leader_ttl_ms": settings.leader_ttl_ms,
            "leader_renew_ms": settings.leader_renew_ms,
            "loadavg_samples": loads,
            "loadavg_1min_max": max((x[0] for x in loads), default=None),
            # The lease's value over time: the first holder, then every change (none expected).
            "lease_values": values,
            "false_failovers": sum(1 for i in range(1, len(holders)) if holders[i] != holders[i - 1]),
            "fires_expected": expected,
            "fires_recorded": len(per_fire),
            "duplicates": sum(v - 1 for v in per_fire.values() if v > 1),
            "misses": expected - len(per_fire),
        }
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        engine.dispose()
    finally:
        for p in procs + burners:
            if p.poll() is None:
                p.kill()
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()
        delete_queues(AMQP, name)  # ten minutes of fires nobody consumed: ~600,000 messages
        delete_keys(REDIS, name)


if __name__ == "__main__":
    main()
