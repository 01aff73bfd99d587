"""The enqueue path's insert: a run's row as ``insert_run`` writes it, against how it used to.

An on-demand run (``fn.send()``, ``POST /jobs/{id}/trigger``), a retry and the latency phase of
``worker_throughput.py`` start with ``insert_run`` on the pooled engine: a checkout (pre-ping),
the ``INSERT``, the ``COMMIT``. Until 2026-12-04 it built ``insert(runs_table).values(...)`` for
every run (``built``, reproduced here); it now executes one statement built at import with the
run's values as parameters (``prepared``), whose compiled form SQLAlchemy finds in its cache
without coercing eleven values and computing a cache key first. This alternates the two for
``--rounds`` rounds of ``--inserts`` inserts at ``--rate`` per second (the latency phase's
arrival rate) and records each one's time and the process's CPU per insert:

    PYTHONPATH=. python benchmarks/run_insert.py

Results go to benchmarks/results/run_insert.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from benchmarks.databases import scratch_database
from benchmarks.stats import percentiles, run_machine
from tickwork.spec import JobSpec
from tickwork.store.engine import make_engine
from tickwork.store.jobs import create_job
from tickwork.store.models import runs_table
from tickwork.store.runs import insert_run
from tickwork.vocabulary import utcnow

ROOT = Path(__file__).resolve().parents[1]


def built_insert_run(engine: Engine, *, job_id: int, scheduled_for: datetime, attempt: int) -> int:
    """``insert_run`` as it was before 2026-12-04: the statement built for every run."""
    now = utcnow()
    with engine.begin() as conn:
        result = conn.execute(
            insert(runs_table).values(
                job_id=job_id,
                scheduled_for=scheduled_for,
                attempt=attempt,
                status="PENDING",
                trigger="schedule",
                available_at=now,
                arguments=None,
                error=None,
                finished_at=None,
                created_at=now,
                updated_at=now,
            )
        )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


MODES: dict[str, Callable[..., int]] = {"prepared": insert_run, "built": built_insert_run}


def quantiles(values: list[float]) -> dict[str, float]:
    p50, p90, p99 = percentiles(values, 0.5, 0.9, 0.99)
    return {"p50_ms": round(p50, 3), "p90_ms": round(p90, 3), "p99_ms": round(p99, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--inserts", type=int, default=400, help="per mode and round")
    parser.add_argument("--rate", type=float, default=200.0, help="inserts per second")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "run_insert.json"))
    args = parser.parse_args()
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, float] = dict.fromkeys(MODES, 0.0)
    rounds: list[dict[str, Any]] = []
    started = datetime.now(UTC)
    load_start = os.getloadavg()
    with scratch_database("bench_insert") as settings:
        engine = make_engine(settings)
        job_id = create_job(
            engine,
            JobSpec(name="run-insert", handler_type="python", handler_data="x", queue="q"),  # type: ignore[arg-type]
        ).id
        attempt = 0
        for number in range(args.rounds):
            row: dict[str, Any] = {}
            for mode in list(MODES) if number % 2 == 0 else reversed(MODES):
                write = MODES[mode]
                times: list[float] = []
                cpu_start = time.process_time()
                start = time.monotonic()
                for i in range(args.inserts):
                    delay = start + i / args.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    attempt += 1
                    t0 = time.perf_counter()
                    write(engine, job_id=job_id, scheduled_for=utcnow(), attempt=attempt)
                    times.append((time.perf_counter() - t0) * 1000)
                used = time.process_time() - cpu_start
                cpu[mode] += used
                samples[mode].extend(times)
                row[mode] = {**quantiles(times), "cpu_ms_per_insert": round(used * 1000 / args.inserts, 3)}
            rounds.append(row)
            print(f"round {number + 1}: {row}", flush=True)
        engine.dispose()
    summary = {
        mode: {**quantiles(values), "cpu_ms_per_insert": round(cpu[mode] * 1000 / len(values), 3)}
        for mode, values in samples.items()
    }
    results = {
        "machine": run_machine(started, load_start),
        "inserts_per_mode_and_round": args.inserts,
        "rate_per_s": args.rate,
        "summary": summary,
        "prepared_lower": {
            key: f"{sum(r['prepared'][key] < r['built'][key] for r in rounds)} of {len(rounds)} rounds"
            for key in ("p50_ms", "p99_ms", "cpu_ms_per_insert")
        },
        "rounds": rounds,
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("summary", "prepared_lower")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
