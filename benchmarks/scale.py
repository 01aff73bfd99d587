"""Scale: 100,000 active schedules (minutely, spread over the minute) and 1,000,000 runs in the table.

* ``--schedules`` jobs, job *i* firing at second ``i % 60`` of every minute (100,000 → ~1,667
  fires/s, the same number at each second);
* ``--history`` finished runs already in ``job_runs`` (written server-side, ``INSERT … SELECT``),
  the newest ``--history-age-days`` old (default 1: within the default 30-day retention, so they
  stay in the table for the whole run; ``runs_in_table_after`` says so). Past the retention
  (e.g. 40), the leader's retention sweep deletes them during the run, as it would on turning
  retention on over an old table: its first pass starts ~60 s after the scheduler;
* one ``tickwork scheduler`` (the leader) for ``--duration`` seconds; the queue is purged every
  2 s (no consumer: the publish is what is measured), and the outbox grace is a day (no worker
  claims the runs, so the sweep would otherwise republish every fire older than 30 s);
* publish lag (``scheduled_for`` → ``enqueued_at``) p50/p99 after a warm-up, per second and in
  total; the ticker's CPU and peak memory, also per 1,000 schedules; fires expected / recorded /
  duplicated / missed;
* ``EXPLAIN`` of the hot queries, captured as the store runs them (one in-process
  ``fire_due_jobs`` and ``pending_unclaimed`` on the full tables after the run, statements
  taken from SQLAlchemy's ``before_cursor_execute`` with their parameters).

    PYTHONPATH=. python benchmarks/scale.py --schedules 100000 --history 1000000 --duration 90

Writes benchmarks/results/scale.json and benchmarks/results/scale.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
from sqlalchemy import event, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.databases import create_database  # noqa: E402
from benchmarks.scheduling import AMQP, REDIS, cpu_seconds, tickwork_env  # noqa: E402
from benchmarks.stats import lag_summary, percentile  # noqa: E402
from benchmarks.worker_throughput import (  # noqa: E402
    add_queue_version_option,
    delete_keys,
    delete_queues,
    queue_version,
)
from tickwork.config import load_settings  # noqa: E402
from tickwork.messaging import queue_name  # noqa: E402
from tickwork.store.engine import make_engine, upgrade  # noqa: E402
from tickwork.store.fires import fire_due_jobs, pending_unclaimed  # noqa: E402
from tickwork.store.models import jobs_table, runs_table  # noqa: E402


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def explain_hot_queries(engine: Any) -> list[dict[str, Any]]:
    """Run the ticker's and the outbox sweep's queries once and EXPLAIN each statement they sent."""
    captured: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        if not many and verb in ("SELECT", "UPDATE", "DELETE"):
            captured.append(cursor.mogrify(statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        fire_due_jobs(engine, now=datetime.now(UTC), limit=2000)
        pending_unclaimed(engine, grace_seconds=30)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    with engine.connect() as conn:
        ids = ",".join(
            str(i) for i in conn.scalars(text("SELECT id FROM job_runs ORDER BY id DESC LIMIT 500"))
        )
    if ids:
        # The two statements outside this process: the ticker's publish stamp (runs.mark_enqueued)
        # and a worker group's claim (store/recorder.py), with 500 ids each.
        captured.append(f"UPDATE job_runs SET enqueued_at = NOW(6) WHERE id IN ({ids})")
        captured.append(
            "UPDATE job_runs SET status = 'RUNNING', worker_id = 'w', started_at = NOW(6),"
            f" updated_at = NOW(6) WHERE id IN ({ids}) AND status = 'PENDING'"
        )
    plans = []
    with engine.connect() as conn:
        for sql in dict.fromkeys(captured):
            rows = conn.exec_driver_sql(f"EXPLAIN {sql}").mappings().all()
            shown = sql if len(sql) < 600 else sql[:600] + " …"
            plans.append({"statement": shown, "plan": [dict(r) for r in rows]})
    return plans


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=1_000_000, help="finished runs already in the table")
    parser.add_argument(
        "--history-age-days",
        type=float,
        default=1.0,
        help="age of the newest history run (past TICKWORK_RETENTION_DAYS, 30: pruned during the run)",
    )
    parser.add_argument("--duration", type=float, default=90.0)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds left out of the lag figures")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    add_queue_version_option(parser)
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load_start = [round(x, 2) for x in os.getloadavg()]
    name, server, url = create_database("tw_scale")
    proc: subprocess.Popen[bytes] | None = None
    policy = contextlib.ExitStack()
    try:
        policy.enter_context(queue_version(f"^{name}\\.", args.queue_version))
        upgrade(url)
        engine = make_engine(url)
        settings = load_settings(database_url=url, broker_url=AMQP, namespace=name)
        t_setup = time.monotonic()
        now = datetime.now(UTC)
        parked = datetime(2099, 1, 1, tzinfo=UTC)  # set to the first fire once the table is ready
        rows = []
        for i in range(args.schedules):
            second = i % 60
            rows.append(
                {"name": f"scale-{i}", "cron_expression": f"{second} * * * * *", "timezone": "UTC",
                 "handler_type": "python", "handler_data": "bench.noop", "retry_count": 0,
                 "retry_backoff_seconds": 10, "max_backoff_seconds": 3600, "queue": "default",
                 "misfire_policy": "fire_once", "overlap_policy": "allow", "enabled": True,
                 "source": "api", "next_fire_at": parked, "version": 1, "created_at": now,
                 "updated_at": now}
            )  # fmt: skip
        with engine.begin() as conn:
            for chunk in range(0, len(rows), 5000):
                conn.execute(insert(jobs_table), rows[chunk : chunk + 5000])
        per_job = math.ceil(args.history / args.schedules)
        if args.history:
            # Finished runs of past minutes, written by the server itself: per_job per job, the
            # newest --history-age-days old (relative to now: a fixed date would age past the
            # retention and be deleted during the run).
            origin = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(
                days=args.history_age_days, minutes=per_job
            )
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO job_runs (job_id, scheduled_for, attempt, status, `trigger`, available_at,"
                    " enqueued_at, started_at, finished_at, worker_id, created_at, updated_at) "
                    "SELECT j.id, t.at, 1, 'SUCCESS', 'schedule', t.at, t.at, t.at, t.at, 'w-history',"
                    " t.at, t.at"
                    " FROM jobs j JOIN (SELECT %(origin)s + INTERVAL seq MINUTE AS at"
                    f" FROM seq_0_to_{per_job - 1}) t"
                    f" WHERE j.id <= (SELECT MIN(id) FROM jobs) + {math.ceil(args.history / per_job) - 1}",
                    {"origin": origin},
                )
                conn.exec_driver_sql("ANALYZE TABLE job_runs, jobs")
        with engine.connect() as conn:
            history = conn.scalar(text("SELECT COUNT(*) FROM job_runs"))
        # Each job's first fire: the first of its seconds (``i % 60``, in its cron expression)
        # from 20 s on (the scheduler boots meanwhile).
        start_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE jobs SET next_fire_at = %(start)s + INTERVAL"
                " MOD(CAST(SUBSTRING_INDEX(cron_expression, ' ', 1) AS SIGNED) - %(second)s + 60, 60) SECOND",
                {"start": start_at.replace(tzinfo=None), "second": start_at.second},
            )
        setup_seconds = round(time.monotonic() - t_setup, 1)
        print(f"{args.schedules} schedules, {history} runs in the table ({setup_seconds} s)", flush=True)

        amqp = pika.BlockingConnection(pika.URLParameters(AMQP))
        channels = [amqp.channel()]
        queue = queue_name(settings, "default")

        def purge() -> None:
            # The scheduler declares the queue (with Dramatiq's arguments); until it has, 404.
            try:
                channels[0].queue_purge(queue)
            except pika.exceptions.ChannelClosedByBroker:
                channels[0] = amqp.channel()

        log = open(out.with_name("scale-scheduler.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickwork", "scheduler", "--node-id", "scale0"],
            # No worker claims the runs here: without a long outbox grace the sweep would republish
            # (and re-stamp) every fire older than 30 s, measuring the sweep instead of the ticker.
            env=tickwork_env(url, name, TICKWORK_OUTBOX_GRACE_SECONDS="86400"),
            stdout=log,
            stderr=log,
        )
        time.sleep(max(0.0, start_at.timestamp() - time.time()))
        t0 = time.time()
        cpu_mark: tuple[float, float] | None = None  # (time, CPU seconds) at the end of the warm-up
        while time.time() - t0 < args.duration:
            if proc.poll() is not None:
                raise RuntimeError("the scheduler exited; see scale-scheduler.log")
            purge()
            if cpu_mark is None and time.time() - t0 >= args.warmup:
                cpu_mark = (time.time(), cpu_seconds(proc.pid))
            time.sleep(2)
        if cpu_mark is None:
            raise RuntimeError("--duration must be longer than --warmup")
        cpu_end = (time.time(), cpu_seconds(proc.pid))
        rss, hwm = rss_mb(proc.pid)
        stop = time.time()
        proc.terminate()
        proc.wait(timeout=30)
        purge()
        amqp.close()

        measured_from = datetime.fromtimestamp(t0 + args.warmup, UTC)
        last = datetime.fromtimestamp(math.floor(stop) - 3, UTC)
        with engine.connect() as conn:
            history_after = conn.scalar(text("SELECT COUNT(*) FROM job_runs WHERE worker_id = 'w-history'"))
            fires = list(
                conn.execute(
                    select(runs_table.c.job_id, runs_table.c.scheduled_for, runs_table.c.enqueued_at).where(
                        runs_table.c.scheduled_for >= datetime.fromtimestamp(math.ceil(t0), UTC),
                        runs_table.c.scheduled_for <= last,
                    )
                )
            )
        per_fire = Counter((r.job_id, r.scheduled_for) for r in fires)
        # Job i fires at second i % 60: the jobs due at each second of the window.
        at_second = Counter(i % 60 for i in range(args.schedules))
        tick = datetime.fromtimestamp(math.ceil(t0), UTC)
        expected = 0
        while tick <= last:
            expected += at_second[tick.second]
            tick += timedelta(seconds=1)
        lags = [
            (r.enqueued_at - r.scheduled_for).total_seconds() * 1000
            for r in fires
            if r.enqueued_at is not None and r.scheduled_for >= measured_from
        ]
        by_second: dict[int, list[float]] = defaultdict(list)
        for r in fires:
            if r.enqueued_at is not None:
                by_second[int(r.scheduled_for.timestamp() - t0)].append(
                    (r.enqueued_at - r.scheduled_for).total_seconds() * 1000
                )
        cpu_percent = 100 * (cpu_end[1] - cpu_mark[1]) / (cpu_end[0] - cpu_mark[0])
        print("explaining the hot queries ...", flush=True)
        plans = explain_hot_queries(engine)
        result = {
            "machine": os.uname().nodename,
            "cores": os.cpu_count(),
            "measured_at": datetime.now(UTC).isoformat(),
            "loadavg_start": load_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "queue_version": args.queue_version or "broker default",
            "schedules": args.schedules,
            "fires_per_second_scheduled": round(args.schedules / 60, 1),
            "runs_in_table_before": history,
            "history_age_days": args.history_age_days,
            "runs_in_table_after": history_after,
            "setup_seconds": setup_seconds,
            "duration_seconds": args.duration,
            "warmup_seconds": args.warmup,
            "fires_recorded": len(per_fire),
            "fires_expected": expected,
            "duplicates": sum(v - 1 for v in per_fire.values() if v > 1),
            "misses": expected - len(per_fire),
            "never_published": sum(1 for r in fires if r.enqueued_at is None),
            "publish_lag_ms": lag_summary(lags),
            "ticker_cpu_percent": round(cpu_percent, 1),
            "ticker_cpu_percent_per_1000_schedules": round(cpu_percent / (args.schedules / 1000), 3),
            "ticker_rss_mb": round(rss, 1),
            "ticker_peak_rss_mb": round(hwm, 1),
            "ticker_peak_rss_mb_per_1000_schedules": round(hwm / (args.schedules / 1000), 3),
            "lag_p99_per_second_ms": {k: percentile(v, 0.99) for k, v in sorted(by_second.items())},
            "explain": plans,
        }
        out.write_text(json.dumps(result, indent=2, default=str))
        brief = {k: v for k, v in result.items() if k not in ("lag_p99_per_second_ms", "explain")}
        print(json.dumps(brief, indent=2), flush=True)
        plot(result, out.with_suffix(".png"))
        engine.dispose()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()
        delete_queues(AMQP, name)
        delete_keys(REDIS, name)
        policy.close()


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    series = result["lag_p99_per_second_ms"]
    ax.plot([int(k) for k in series], list(series.values()), marker="o", ms=2)
    ax.axvline(result["warmup_seconds"], color="grey", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("second of the run (dashed: end of the warm-up)")
    ax.set_ylabel("publish lag p99 of the second's fires (ms, log)")
    ax.set_title(
        f"{result['schedules']:,} minutely schedules (~{result['fires_per_second_scheduled']:.0f} fires/s), "
        f"{result['runs_in_table_before']:,} runs in the table"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
