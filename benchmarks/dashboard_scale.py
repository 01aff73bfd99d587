"""Dashboard queries on 10,000 jobs and 1,000,000 run rows (MariaDB): timings and EXPLAIN.

    PYTHONPATH=. python benchmarks/dashboard_scale.py [--server mysql+pymysql://root@127.0.0.1:3306]

Creates (and afterwards drops, unless ``--keep``) its own database ``tickwork_bench_dashboard``,
fills it with MariaDB's SEQUENCE engine, then runs each dashboard query several times and prints
its median time and its EXPLAIN plan.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, func, select, text

from tickwork.store import stats
from tickwork.store.engine import make_engine, upgrade
from tickwork.store.models import jobs_table, runs_table, utcnow
from tickwork.store.runs import list_runs

DB = "tickwork_bench_dashboard"


def fill(engine: Any, jobs: int, runs: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (name, cron_expression, timezone, handler_type, handler_data, retry_count,"
                " retry_backoff_seconds, max_backoff_seconds, queue, misfire_policy, overlap_policy, enabled,"
                " source, next_fire_at, version, created_at, updated_at)"
                " SELECT CONCAT('job-', LPAD(seq, 6, '0')), '0 */5 * * * *', 'UTC', 'http',"
                " 'http://127.0.0.1:9/x', 3, 10, 3600, 'default', 'fire_once', 'allow', 1, 'api',"
                " UTC_TIMESTAMP(6) + INTERVAL (seq % 300) SECOND, 1, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)"
                f" FROM seq_1_to_{jobs}"
            )
        )
    # Runs spread over the last 7 days, newest last; 2% dead, 1% pending, the rest success/failed.
    chunk = 200_000
    for start in range(0, runs, chunk):
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO job_runs (job_id, scheduled_for, attempt, status, `trigger`, worker_id,"
                    " available_at, started_at, finished_at, created_at, updated_at, output)"
                    " SELECT 1 + (seq % :jobs), t, 1,"
                    " CASE WHEN seq % 50 = 0 THEN 'DEAD' WHEN seq % 100 = 1 THEN 'PENDING'"
                    " WHEN seq % 10 = 3 THEN 'FAILED' ELSE 'SUCCESS' END,"
                    " 'schedule', 'w-1', t, t + INTERVAL ((seq % 2000) * 1000) MICROSECOND,"
                    " t + INTERVAL 1 SECOND, t, t, 'ok'"
                    " FROM (SELECT seq,"
                    " UTC_TIMESTAMP(6) - INTERVAL ((:runs - seq) * :spread) MICROSECOND AS t"
                    f" FROM seq_{start + 1}_to_{min(start + chunk, runs)}) s"
                ),
                {"jobs": jobs, "runs": runs, "spread": int(7 * 86400 * 1_000_000 / runs)},
            )


def timed(label: str, fn: Callable[[], Any], repeat: int = 5) -> None:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    print(f"{label:<44} median {statistics.median(samples) * 1000:8.1f} ms")


def explain(engine: Any, label: str, statement: Any) -> None:
    print(f"EXPLAIN {label}")
    for row in stats.explain(engine, statement):
        keep = {k: row.get(k) for k in ("table", "type", "key", "rows", "Extra")}
        print("   ", keep)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", default="mysql+pymysql://root@127.0.0.1:3306")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the filled database")
    parser.add_argument("--reuse", action="store_true", help="query a database kept by --keep")
    args = parser.parse_args()
    server = create_engine(args.server, isolation_level="AUTOCOMMIT")
    url = f"{args.server}/{DB}"
    if args.reuse:
        report(make_engine(url), args.jobs)
        return
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DB}"))
        conn.execute(text(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4"))
    try:
        upgrade(url)
        engine = make_engine(url)
        start = time.perf_counter()
        fill(engine, args.jobs, args.runs)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE TABLE jobs, job_runs"))
        print(f"filled {args.jobs} jobs, {args.runs} runs in {time.perf_counter() - start:.1f} s")
        report(engine, args.jobs)
        engine.dispose()
    finally:
        if not args.keep:
            with server.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {DB}"))


def report(engine: Any, jobs: int) -> None:
    middle = jobs // 2
    timed("jobs page 1 (+ newest run of each)", lambda: stats.job_summaries(engine, limit=50))
    timed(f"jobs page after id {middle}", lambda: stats.job_summaries(engine, after_id=middle, limit=50))
    timed("jobs by name substring 'job-0099'", lambda: stats.job_summaries(engine, name_contains="job-0099"))
    timed("DLQ size (COUNT status=DEAD)", lambda: stats.dead_count(engine))
    timed("PENDING count", lambda: stats.pending_count(engine))
    timed("API /dlq page 1 (DEAD, newest first)", lambda: list_runs(engine, status="DEAD", limit=50))
    timed(f"API /jobs/{middle}/runs page 1", lambda: list_runs(engine, job_id=middle, limit=50))
    timed("API /runs page 1", lambda: list_runs(engine, limit=50))
    timed("timeline, last 60 min", lambda: stats.run_timeline(engine, minutes=60))
    timed("timeline, last 24 h", lambda: stats.run_timeline(engine, minutes=1440), repeat=3)

    j, r = jobs_table.c, runs_table.c
    explain(engine, "jobs page", select(j.id, j.name).where(j.id > middle).order_by(j.id).limit(51))
    explain(
        engine,
        "jobs by name substring",
        select(j.id).where(j.name.startswith("job-0099")).where(j.id > 0).order_by(j.id).limit(51),
    )
    newest = (
        select(func.max(r.id).label("id"))
        .where(r.job_id.in_(list(range(middle, middle + 50))))
        .group_by(r.job_id)
        .subquery("newest")
    )
    explain(engine, "newest run per job", select(r.id, r.status).join(newest, r.id == newest.c.id))
    explain(engine, "DLQ size", select(func.count()).select_from(runs_table).where(r.status == "DEAD"))
    since = utcnow().replace(tzinfo=None)
    explain(
        engine,
        "timeline range",
        select(r.status, func.count()).where(r.created_at >= since).group_by(r.status),
    )
    explain(
        engine,
        "a job's runs page",
        select(r.id).where(r.job_id == middle).order_by(r.id.desc()).limit(50),
    )
    explain(
        engine,
        "DLQ page",
        select(r.id).where(r.status == "DEAD").order_by(r.id.desc()).limit(50),
    )


if __name__ == "__main__":
    main()
