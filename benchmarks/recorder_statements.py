"""MariaDB's CPU per job for the shapes a worker's group commit can send, without workers.

A drain's MariaDB CPU per job is what the recorder's groups cost it. This replays a drain's
writes directly: ``--jobs`` PENDING rows, claimed in groups of ``--group`` by ``--connections``
connections (a worker process's leader each: every connection takes every n-th group), each
group also finishing the previous group's rows, as successes ride with the next claims. Shapes:

- ``statements``: the claims' ``UPDATE``, the finishes' ``UPDATE`` and a ``COMMIT`` in one
  multi-statement round trip (the recorder before 2026-12-04 18:00 UTC);
- ``combined``: the recorder's own statement (``tickwork.store.recorder._update``), one per
  group, autocommitted;

each at every ``--sizes`` group size, in alternating order for ``--rounds`` rounds:

    PYTHONPATH=. python benchmarks/recorder_statements.py

Results (medians and every round) go to benchmarks/results/recorder_statements.json. CPU comes
from /proc in 10 ms ticks: a trial of 10,000 jobs spends ~1 s of it, so one trial is good to
~1 %; the spread from trial to trial on these VMs is ~15 %, hence rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql
from pymysql.constants import CLIENT

from benchmarks.databases import mariadb_cpu, scratch_database
from tickwork.spec import JobSpec
from tickwork.store.engine import make_engine
from tickwork.store.jobs import create_job
from tickwork.store.recorder import CLAIM, FINISH, _escaper, _Pending, _update

ROOT = Path(__file__).resolve().parents[1]
SERVER = "mysql+pymysql://root@127.0.0.1:3306"
SHAPES = ("statements", "combined")
#: A no-op job's outcome: (status, output, error, traceback, http_status).
SUCCESS = ("SUCCESS", None, None, None, None)


def connect(database: str, *, autocommit: bool) -> Any:
    return pymysql.connect(
        host="127.0.0.1",
        user="root",
        database=database,
        autocommit=autocommit,
        client_flag=CLIENT.MULTI_STATEMENTS | CLIENT.FOUND_ROWS,
        init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    )


def load(conn: Any, job_id: int, jobs: int) -> list[int]:
    """``jobs`` fresh PENDING rows (the previous trial's deleted), their ids ascending."""
    cur = conn.cursor()
    cur.execute("DELETE FROM job_runs")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    for start in range(0, jobs, 1000):
        values = ",".join(
            f"({job_id}, '{now}', {n + 1}, 'PENDING', 'schedule', '{now}', '{now}', '{now}', '{now}')"
            for n in range(start, min(jobs, start + 1000))
        )
        cur.execute(
            "INSERT INTO job_runs (job_id, scheduled_for, attempt, status, `trigger`, available_at,"
            f" enqueued_at, created_at, updated_at) VALUES {values}"
        )
    conn.commit()
    cur.execute("SELECT id FROM job_runs ORDER BY id")
    return [int(row[0]) for row in cur.fetchall()]


def statements_sql(esc: Any, at: str, worker: str, claims: list[int], finishes: list[int]) -> str:
    """The shape before: one UPDATE for the claims, one for the finishes, then COMMIT."""
    sql = []
    if claims:
        sql.append(
            f"UPDATE job_runs SET status = 'RUNNING', worker_id = {esc(worker)}, started_at = {at},"
            f" updated_at = {at}, message_id = message_id"
            f" WHERE id IN ({','.join(map(str, claims))}) AND status = 'PENDING'"
        )
    if finishes:
        sql.append(
            f"UPDATE job_runs SET status = 'SUCCESS', output = NULL, http_status = NULL, error = NULL,"
            f" traceback = NULL, finished_at = {at}, updated_at = {at}"
            f" WHERE id IN ({','.join(map(str, finishes))}) AND status = 'RUNNING'"
            f" AND worker_id = {esc(worker)}"
        )
    return ";\n".join([*sql, "COMMIT"])


def combined_sql(esc: Any, at: str, worker: str, claims: list[int], finishes: list[int]) -> str:
    """The recorder's statement for this group."""
    return _update(
        esc,
        at,
        worker,
        [_Pending(CLAIM, run_id, worker, message_id=None) for run_id in claims],
        [_Pending(FINISH, run_id, worker, outcome=SUCCESS) for run_id in finishes],
    )


def trial(database: str, ids: list[int], shape: str, group: int, connections: int) -> dict[str, float]:
    build = combined_sql if shape == "combined" else statements_sql
    conns = [connect(database, autocommit=shape == "combined") for _ in range(connections)]
    errors: list[BaseException] = []

    def leader(k: int, conn: Any) -> None:
        try:
            cur, esc, worker = conn.cursor(), _escaper(conn), f"bench-{k}"
            groups = [ids[i : i + group] for i in range(k * group, len(ids), group * connections)]
            previous: list[int] = []
            for claims in [*groups, []]:  # the last round trip: the last group's finishes
                at = esc(datetime.now(UTC).replace(tzinfo=None))
                cur.execute(build(esc, at, worker, claims, previous))
                while cur.nextset():
                    pass
                previous = claims
            sql = "SELECT COUNT(*) FROM job_runs WHERE worker_id = %s AND status = 'SUCCESS'"
            cur.execute(sql, (worker,))
            done = cur.fetchone()[0]
            if done != sum(len(g) for g in groups):  # every claim and finish matched its row
                raise RuntimeError(f"{worker}: {done} of {sum(len(g) for g in groups)} rows SUCCESS")
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=leader, args=(k, c)) for k, c in enumerate(conns)]
    cpu0, t0 = mariadb_cpu(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds, cpu = time.perf_counter() - t0, mariadb_cpu() - cpu0
    for c in conns:
        c.close()
    if errors:
        raise errors[0]
    return {"mariadb_cpu_ms_per_job": round(cpu * 1000 / len(ids), 4), "seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 6, 12], help="claims per group")
    parser.add_argument("--connections", type=int, default=2, help="worker processes' leaders")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "recorder_statements.json"))
    args = parser.parse_args()

    with scratch_database("tickwork_bench_stmts") as settings:
        engine = make_engine(settings)
        job_id = create_job(engine, JobSpec(name="stmts", handler_type="python", handler_data="x")).id
        engine.dispose()
        name = engine.url.database
        assert name is not None
        loader = connect(name, autocommit=False)
        rounds: list[dict[str, Any]] = []
        for n in range(args.rounds):
            order = list(SHAPES) if n % 2 == 0 else list(reversed(SHAPES))
            entry: dict[str, Any] = {"order": order}
            for size in args.sizes:
                for shape in order:
                    ids = load(loader, job_id, args.jobs)
                    entry[f"{shape}_{size}"] = trial(name, ids, shape, size, args.connections)
            rounds.append(entry)
            print(json.dumps(entry))
        loader.close()
        medians = {
            f"{shape}_{size}": {
                key: round(statistics.median(r[f"{shape}_{size}"][key] for r in rounds), 4)
                for key in ("mariadb_cpu_ms_per_job", "seconds")
            }
            for size in args.sizes
            for shape in SHAPES
        }
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.node()} ({os.cpu_count()} cores)",
            "jobs": args.jobs,
            "connections": args.connections,
            "medians": medians,
            "combined_vs_statements_cpu": {
                str(size): round(
                    medians[f"combined_{size}"]["mariadb_cpu_ms_per_job"]
                    / medians[f"statements_{size}"]["mariadb_cpu_ms_per_job"],
                    3,
                )
                for size in args.sizes
            },
            "rounds": rounds,
        }
        print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
