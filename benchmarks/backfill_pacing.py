"""Backfill pacing benchmark: does a 10,000-fire backfill starve on-time fires?

On the real services (MariaDB, Redis, RabbitMQ): ``--schedules`` per-second jobs fired by one
``tickwork scheduler`` process, and a consumer thread that takes every message as it arrives
(the moment a worker would start it). Three phases, back to back:

1. ``baseline``: on-time fires only;
2. ``paced``: a 10,000-fire backfill of a separate job is written (``tickwork.backfill``, as
   ``POST /jobs/{id}/backfill`` does) at the default ``TICKWORK_BACKFILL_FIRES_PER_SECOND``;
   the scheduler's outbox sweep publishes its fires as they become due;
3. ``unpaced``: the same backfill with every fire due at once (what pacing avoids).

Reported per phase, for the on-time fires only: publish lag (``scheduled_for`` → ``enqueued_at``)
and consumer lag (→ message received), p50/p99/max; and for the backfill: how long until every
fire was published and received.

Then the same three phases with two real ``tickwork worker`` processes (8 threads each) on the
queue the on-time fires share with the backfill (``--workers-schedules`` per-second no-op jobs):
the on-time fires' start lag (``scheduled_for`` → the worker's claim) shows whether they wait
behind the backfill's messages.

Run: ``PYTHONPATH=. python benchmarks/backfill_pacing.py`` (about 5 minutes)
Writes ``results/backfill_pacing.json`` and ``results/backfill_pacing.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.databases import create_database  # noqa: E402
from benchmarks.scheduling import (  # noqa: E402
    AMQP,
    REDIS,
    Receiver,
    tickwork_env,
    wait_for_workers,
)
from benchmarks.stats import lag_summary, percentile  # noqa: E402
from benchmarks.worker_throughput import delete_keys, delete_queues  # noqa: E402
from tickwork.backfill import backfill  # noqa: E402
from tickwork.config import load_settings  # noqa: E402
from tickwork.messaging import queue_name  # noqa: E402
from tickwork.store.engine import make_engine, upgrade  # noqa: E402
from tickwork.store.jobs import get_job  # noqa: E402
from tickwork.store.models import jobs_table, runs_table  # noqa: E402

BACKFILL_FIRES = 10_000


def job_row(
    name: str,
    *,
    enabled: bool,
    first: datetime | None,
    now: datetime,
    handler: str = "bench.noop",
    queue: str = "default",
) -> dict[str, Any]:
    return {
        "name": name,
        "cron_expression": "* * * * * *",
        "timezone": "UTC",
        "handler_type": "python",
        "handler_data": handler,
        "retry_count": 0,
        "retry_backoff_seconds": 10,
        "max_backoff_seconds": 3600,
        "queue": queue,
        "misfire_policy": "fire_once",
        "overlap_policy": "allow",
        "enabled": enabled,
        "source": "api",
        "next_fire_at": first,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }


def lags(rows: list[Any], received: dict[int, float], start: float, end: float) -> dict[str, Any]:
    window = [r for r in rows if start <= r["scheduled_for"].timestamp() < end]
    publish = [
        (r["enqueued_at"] - r["scheduled_for"]).total_seconds() * 1000 for r in window if r["enqueued_at"]
    ]
    consume = [
        (received[r["id"]] - r["scheduled_for"].timestamp()) * 1000 for r in window if r["id"] in received
    ]
    return {
        "fires": len(window),
        "never_published": sum(1 for r in window if r["enqueued_at"] is None),
        "publish_lag_ms": lag_summary(publish),
        "consumer_lag_ms": lag_summary(consume),
    }


def run(schedules: int, baseline: float, tail: float) -> dict[str, Any]:
    name, server, url = create_database("tw_fill")
    proc = None
    try:
        upgrade(url)
        engine = make_engine(url)
        settings = load_settings(database_url=url, broker_url=AMQP, redis_url=REDIS, namespace=name)
        now = datetime.now(UTC)
        start_at = datetime.fromtimestamp(math.ceil(time.time()) + 5, UTC)
        rows = [job_row(f"on-time-{i}", enabled=True, first=start_at, now=now) for i in range(schedules)]
        rows += [job_row(f"backfilled-{p}", enabled=False, first=None, now=now) for p in ("paced", "unpaced")]
        with engine.begin() as conn:
            conn.execute(insert(jobs_table), rows)
            ids = {r.name: r.id for r in conn.execute(select(jobs_table.c.id, jobs_table.c.name))}
        receiver = Receiver(AMQP, queue_name(settings, "default"))
        receiver.start()
        log = open(Path(tempfile.gettempdir()) / "backfill-pacing-scheduler.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickwork", "scheduler", "--node-id", "fill"],
            # No worker claims the messages (the receiver only acks them), so the rows stay
            # PENDING: a long grace keeps the outbox sweep from republishing them (which would
            # rewrite enqueued_at). Never-published rows (the backfill's) still go out 2 s
            # after they are due.
            env=tickwork_env(url, name, TICKWORK_OUTBOX_GRACE_SECONDS="3600"),
            stdout=log,
            stderr=log,
        )
        time.sleep(max(0.0, start_at.timestamp() - time.time()))
        phases: dict[str, tuple[float, float]] = {}
        backfills: dict[str, dict[str, Any]] = {}
        t = time.time()
        time.sleep(baseline)
        phases["baseline"] = (t, time.time())
        for phase, rate in (("paced", settings.backfill_fires_per_second), ("unpaced", 1e9)):
            job = get_job(engine, ids[f"backfilled-{phase}"])
            end = datetime.now(UTC).replace(microsecond=0)
            began = time.time()
            result = backfill(
                settings.model_copy(update={"backfill_fires_per_second": rate}),
                engine,
                job,
                end - timedelta(seconds=BACKFILL_FIRES),
                end,
            )
            written = time.time() - began
            expected_span = BACKFILL_FIRES / rate
            time.sleep(max(0.0, min(expected_span, 120.0) + tail - (time.time() - began)))
            phases[phase] = (began, time.time())
            backfills[phase] = {
                "fires": result.fires,
                "fires_per_second_setting": rate if rate < 1e9 else None,
                "write_seconds": written,
                "job_id": job.id,
            }
        proc.terminate()
        proc.wait(timeout=30)
        time.sleep(1.0)
        receiver.stop.set()
        receiver.join(timeout=30)
        with engine.connect() as conn:
            runs = list(
                conn.execute(
                    select(
                        runs_table.c.id,
                        runs_table.c.job_id,
                        runs_table.c.scheduled_for,
                        runs_table.c.enqueued_at,
                        runs_table.c.trigger,
                    )
                ).mappings()
            )
        on_time = [r for r in runs if r["trigger"] == "schedule"]
        result_phases = {}
        series: dict[str, list[float]] = {}
        t_start = phases["baseline"][0]
        for phase, (a, b) in phases.items():
            result_phases[phase] = lags(on_time, receiver.received, a, b)
        for r in on_time:
            if r["enqueued_at"]:
                second = int(r["scheduled_for"].timestamp() - t_start)
                series.setdefault(str(second), []).append(
                    (r["enqueued_at"] - r["scheduled_for"]).total_seconds() * 1000
                )
        for phase, info in backfills.items():
            mine = [r for r in runs if r["job_id"] == info["job_id"]]
            published = [r["enqueued_at"].timestamp() for r in mine if r["enqueued_at"]]
            got = [receiver.received[r["id"]] for r in mine if r["id"] in receiver.received]
            began = phases[phase][0]
            info.update(
                published=len(published),
                received=len(got),
                all_published_after_seconds=(max(published) - began) if len(published) == len(mine) else None,
                all_received_after_seconds=(max(got) - began) if len(got) == len(mine) else None,
            )
            del info["job_id"]
        engine.dispose()
        return {
            "schedules": schedules,
            "on_time_fires_per_second": schedules,
            "phases": {
                p: {"start_second": a - t_start, "end_second": b - t_start, **result_phases[p]}
                for p, (a, b) in phases.items()
            },
            "backfills": backfills,
            "on_time_publish_lag_p99_per_second_ms": {
                k: percentile(v, 0.99) for k, v in sorted(series.items(), key=lambda kv: int(kv[0]))
            },
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()
        delete_keys(REDIS, name)


def run_with_workers(schedules: int, baseline: float, tail: float) -> dict[str, Any]:
    """The same phases through two real ``tickwork worker`` processes (8 threads each) consuming
    the queue the on-time fires and the backfill share: on-time fires' start lag
    (``scheduled_for`` → ``started_at``, the claim) shows whether they wait behind the backfill."""
    name, server, url = create_database("tw_fillw")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(url)
        engine = make_engine(url)
        settings = load_settings(database_url=url, broker_url=AMQP, redis_url=REDIS, namespace=name)
        env = tickwork_env(url, name, TICKWORK_IMPORTS="benchmarks.worker_throughput_jobs")
        log = open(Path(tempfile.gettempdir()) / "backfill-pacing-workers.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tickwork", "worker", "--processes", "2", "--threads", "8"],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        )
        wait_for_workers(name)
        now = datetime.now(UTC)
        start_at = datetime.fromtimestamp(math.ceil(time.time()) + 4, UTC)
        rows = [
            job_row(
                f"on-time-{i}", enabled=True, first=start_at, now=now, handler="bench_noop", queue="bench"
            )
            for i in range(schedules)
        ]
        rows += [
            job_row(
                f"backfilled-{p}", enabled=False, first=None, now=now, handler="bench_noop", queue="bench"
            )
            for p in ("paced", "unpaced")
        ]
        with engine.begin() as conn:
            conn.execute(insert(jobs_table), rows)
            ids = {r.name: r.id for r in conn.execute(select(jobs_table.c.id, jobs_table.c.name))}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tickwork", "scheduler", "--node-id", "fillw"],
                env=env,
                stdout=log,
                stderr=log,
            )
        )
        time.sleep(max(0.0, start_at.timestamp() - time.time()))
        phases: dict[str, tuple[float, float]] = {}
        backfills: dict[str, dict[str, Any]] = {}
        t = time.time()
        time.sleep(baseline)
        phases["baseline"] = (t, time.time())
        c = runs_table.c
        for phase, rate in (("paced", settings.backfill_fires_per_second), ("unpaced", 1e9)):
            job = get_job(engine, ids[f"backfilled-{phase}"])
            end = datetime.now(UTC).replace(microsecond=0)
            began = time.time()
            result = backfill(
                settings.model_copy(update={"backfill_fires_per_second": rate}),
                engine,
                job,
                end - timedelta(seconds=BACKFILL_FIRES),
                end,
            )
            # Until every backfilled fire has started (at most 3 minutes), then the tail.
            deadline = began + 180
            while time.time() < deadline:
                with engine.connect() as conn:
                    left = conn.scalar(select(func.count()).where(c.job_id == job.id, c.started_at.is_(None)))
                if not left:
                    break
                time.sleep(1.0)
            time.sleep(tail)
            phases[phase] = (began, time.time())
            backfills[phase] = {
                "fires": result.fires,
                "fires_per_second_setting": rate if rate < 1e9 else None,
                "job_id": job.id,
            }
        procs[1].send_signal(signal.SIGTERM)
        procs[1].wait(timeout=30)
        with engine.connect() as conn:
            runs = list(
                conn.execute(
                    select(c.id, c.job_id, c.scheduled_for, c.enqueued_at, c.started_at, c.trigger)
                ).mappings()
            )
        engine.dispose()
        on_time = [r for r in runs if r["trigger"] == "schedule"]
        t_start = phases["baseline"][0]
        out_phases = {}
        for phase, (a, b) in phases.items():
            window = [r for r in on_time if a <= r["scheduled_for"].timestamp() < b]
            start = [
                (r["started_at"] - r["scheduled_for"]).total_seconds() * 1000
                for r in window
                if r["started_at"]
            ]
            out_phases[phase] = {
                "start_second": a - t_start,
                "end_second": b - t_start,
                "fires": len(window),
                "never_started": len(window) - len(start),
                "start_lag_ms": lag_summary(start),
            }
        series: dict[str, list[float]] = {}
        for r in on_time:
            if r["started_at"]:
                key = str(int(r["scheduled_for"].timestamp() - t_start))
                series.setdefault(key, []).append(
                    (r["started_at"] - r["scheduled_for"]).total_seconds() * 1000
                )
        for phase, info in backfills.items():
            mine = [r for r in runs if r["job_id"] == info["job_id"]]
            started = [r["started_at"].timestamp() for r in mine if r["started_at"]]
            info.update(
                started=len(started),
                all_started_after_seconds=(max(started) - phases[phase][0])
                if len(started) == len(mine)
                else None,
            )
            del info["job_id"]
        return {
            "schedules": schedules,
            "workers": "2 processes x 8 threads, one queue shared with the backfill",
            "phases": out_phases,
            "backfills": backfills,
            "on_time_start_lag_p99_per_second_ms": {
                k: percentile(v, 0.99) for k, v in sorted(series.items(), key=lambda kv: int(kv[0]))
            },
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()
        delete_queues(AMQP, name, ("bench", "default"))
        delete_keys(REDIS, name)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_workers = result.get("with_workers")
    fig, axes = plt.subplots(2 if with_workers else 1, 1, figsize=(9, 8 if with_workers else 4.5))
    ax = axes[0] if with_workers else axes
    series = result["on_time_publish_lag_p99_per_second_ms"]
    ax.plot(
        [int(k) for k in series], list(series.values()), marker="o", ms=2, label="on-time publish lag p99"
    )
    colours = {"baseline": "#d0d5dd", "paced": "#12b76a", "unpaced": "#f04438"}
    for phase, info in result["phases"].items():
        ax.axvspan(info["start_second"], info["end_second"], color=colours[phase], alpha=0.2, label=phase)
    ax.set_yscale("log")
    ax.set_xlabel("second of the run")
    ax.set_ylabel("publish lag p99 (ms, log)")
    ax.set_title(f"{result['schedules']} on-time fires/s while a {BACKFILL_FIRES:,}-fire backfill runs")
    ax.legend()
    if with_workers:
        ax2 = axes[1]
        series = with_workers["on_time_start_lag_p99_per_second_ms"]
        ax2.plot(
            [int(k) for k in series], list(series.values()), marker="o", ms=2, label="on-time start lag p99"
        )
        for phase, info in with_workers["phases"].items():
            ax2.axvspan(
                info["start_second"], info["end_second"], color=colours[phase], alpha=0.2, label=phase
            )
        ax2.set_yscale("log")
        ax2.set_xlabel("second of the run")
        ax2.set_ylabel("start lag p99 (ms, log)")
        ax2.set_title(
            f"real workers: {with_workers['schedules']} on-time fires/s, same queue as the backfill"
        )
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedules", type=int, default=500, help="per-second jobs (fires/s on time)")
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds without a backfill")
    parser.add_argument(
        "--tail", type=float, default=10.0, help="seconds after each backfill's last fire is due"
    )
    parser.add_argument(
        "--workers-schedules",
        type=int,
        default=100,
        help="per-second jobs of the real-worker run (0 skips it)",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "backfill_pacing.json"))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run(args.schedules, args.baseline, args.tail)
    if args.workers_schedules:
        result["with_workers"] = run_with_workers(args.workers_schedules, args.baseline, args.tail)
    meta = {
        "host_cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "measured_at": datetime.now(UTC).isoformat(),
        **result,
    }
    brief = {k: v for k, v in meta.items() if k != "on_time_publish_lag_p99_per_second_ms"}
    if "with_workers" in brief:
        brief["with_workers"] = {
            k: v for k, v in brief["with_workers"].items() if k != "on_time_start_lag_p99_per_second_ms"
        }
    print(json.dumps(brief, indent=2))
    out.write_text(json.dumps(meta, indent=2))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
