"""The outbox sweep's query with a backlog: time and MariaDB CPU per pass, and its plans.

When workers fall behind, PENDING rows older than the grace pile up; the leader's outbox sweep
queries them once a second (and republishes only never-published ones and those whose queue is
empty). This loads ``--backlog`` published, unclaimed PENDING rows and ``--unpublished``
never-published ones into a fresh database, then runs ``pending_unclaimed`` ``--passes`` times:

    PYTHONPATH=. python benchmarks/outbox_backlog.py --backlog 200000 --label after

To compare with other code (a git worktree at another commit), put that tree first on the path:
``PYTHONPATH=/path/to/worktree python benchmarks/outbox_backlog.py --label before``. Each run adds
its entry (by label) to benchmarks/results/outbox_backlog.json, with the EXPLAIN of every
statement the pass sent.

It imports only ``benchmarks.databases`` of the other benchmarks (``scale.py`` has a similar
EXPLAIN capture): the others would import this tree's tickwork before the worktree's on the path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

import tickwork
from benchmarks.databases import mariadb_cpu, scratch_database
from tickwork.spec import JobSpec
from tickwork.store.engine import make_engine
from tickwork.store.fires import pending_unclaimed
from tickwork.store.jobs import create_job
from tickwork.store.models import runs_table, utcnow

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=200_000, help="published, unclaimed PENDING rows")
    parser.add_argument("--unpublished", type=int, default=10, help="never-published PENDING rows")
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--label", default="current")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "outbox_backlog.json"))
    args = parser.parse_args()

    with scratch_database("tickwork_bench_outbox") as settings:
        engine = make_engine(settings)
        jobs = [
            create_job(
                engine, JobSpec(name=f"backlog-{i}", handler_type="python", handler_data="x", queue="q")
            ).id
            for i in range(10)
        ]
        old = utcnow() - timedelta(minutes=5)

        def row(n: int) -> dict[str, Any]:
            """The n-th PENDING row: due 5 minutes ago, published then (the last ones never)."""
            return {
                "job_id": jobs[n % 10],
                "scheduled_for": old + timedelta(microseconds=n),
                "attempt": 1,
                "status": "PENDING",
                "trigger": "schedule",
                "available_at": old,
                "enqueued_at": None if n >= args.backlog else old,
                "created_at": old,
                "updated_at": old,
            }

        with engine.begin() as conn:
            for start in range(0, args.backlog + args.unpublished, 10_000):
                count = min(10_000, args.backlog + args.unpublished - start)
                conn.execute(runs_table.insert(), [row(start + i) for i in range(count)])
            conn.execute(text("ANALYZE TABLE job_runs"))
        statements: list[str] = []

        def capture(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            statements.append(cursor.mogrify(statement, parameters))

        times, cpus, found = [], [], 0
        for _ in range(args.passes):
            cpu0, t0 = mariadb_cpu(), time.perf_counter()
            found = len(pending_unclaimed(engine, grace_seconds=30, unpublished_grace_seconds=5))
            times.append((time.perf_counter() - t0) * 1000)
            cpus.append((mariadb_cpu() - cpu0) * 1000)
        event.listen(engine, "before_cursor_execute", capture)
        first = pending_unclaimed(engine, grace_seconds=30, unpublished_grace_seconds=5)
        event.remove(engine, "before_cursor_execute", capture)
        plans = []
        with engine.connect() as conn:
            for sql in statements:
                rows = conn.exec_driver_sql(f"EXPLAIN {sql}").mappings().all()
                plans.append({"statement": sql[:400], "plan": [dict(r) for r in rows]})
        entry = {
            "label": args.label,
            "code": str(Path(tickwork.__file__).resolve().parent),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "backlog": args.backlog,
            "unpublished": args.unpublished,
            "returned": found,
            "never_published_first": all(a.enqueued_at is None for a in first[: args.unpublished]),
            "pass_ms_median": round(statistics.median(times), 1),
            "pass_ms": [round(t, 1) for t in times],
            # /proc counts CPU in 10 ms ticks: the mean over the passes, not a median of ticks.
            "mariadb_cpu_ms_per_pass_mean": round(sum(cpus) / len(cpus), 1),
            "plans": plans,
        }
        print(json.dumps({k: v for k, v in entry.items() if k != "plans"}))
        out = Path(args.out)
        results = json.loads(out.read_text()) if out.exists() else {}
        results[args.label] = entry
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        engine.dispose()


if __name__ == "__main__":
    main()
