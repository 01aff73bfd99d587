"""maxConcurrency on real MariaDB and RabbitMQ with two worker processes: the limit holds across
the cluster (decided in the database claim), waiting attempts are not dropped or failed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from tests.integration.test_worker import consumers
from tests.worker_helpers import wait_for, worker_processes
from tickwork import operations
from tickwork.config import Settings
from tickwork.messaging import make_broker
from tickwork.spec import JobSpec
from tickwork.store.concurrency import Claim, claim_within_limit
from tickwork.store.jobs import create_job
from tickwork.store.models import RunStatus, runs_table
from tickwork.store.runs import insert_run

pytestmark = pytest.mark.integration

JOB_SECONDS = 2.0


class SlowTarget:
    """An http target whose every request takes 2 s; it counts the requests in progress."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.done = 0
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with target.lock:
                    target.in_flight += 1
                    target.max_in_flight = max(target.max_in_flight, target.in_flight)
                threading.Event().wait(JOB_SECONDS)  # the job's work
                with target.lock:
                    target.in_flight -= 1
                    target.done += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/work"


@pytest.fixture
def target() -> Iterator[SlowTarget]:
    t = SlowTarget()
    yield t
    t.server.shutdown()
    t.server.server_close()


def running(engine: Engine, job_id: int) -> int:
    c = runs_table.c
    with engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count()).select_from(runs_table).where(c.job_id == job_id, c.status == "RUNNING")
            )
            or 0
        )


def test_twenty_triggers_never_run_more_than_three_at_once(
    cluster_settings: Settings, mysql_engine: Engine, target: SlowTarget, tmp_path: Path
) -> None:
    spec = JobSpec.model_validate(
        {"name": "limited", "handlerType": "http", "handlerData": target.url, "maxConcurrency": 3}
    )
    job = create_job(mysql_engine, spec)
    broker = make_broker(cluster_settings)
    queue = f"{cluster_settings.namespace}.default"
    broker.declare_queue(queue)
    samples_db: list[int] = []
    try:
        with worker_processes(cluster_settings, tmp_path, 2, threads=4):
            wait_for(lambda: consumers(cluster_settings, queue) >= 2, 30, what="two consumers on the queue")
            run_ids = [operations.trigger(cluster_settings, mysql_engine, broker, job) for _ in range(20)]

            def all_done() -> bool:
                samples_db.append(running(mysql_engine, job.id))
                return target.done >= 20 and running(mysql_engine, job.id) == 0

            # 20 jobs of 2 s, 3 at a time: about 14 s; generous for a busy 2-core machine.
            wait_for(all_done, 180, interval=0.05, what="20 attempts done")
            c = runs_table.c
            wait_for(
                lambda: all(s == "SUCCESS" for s in _statuses(mysql_engine, run_ids)), 30, what="20 successes"
            )
    finally:
        broker.close()
    with mysql_engine.connect() as conn:
        rows = conn.execute(select(c.id, c.status, c.attempt).where(c.job_id == job.id)).all()
    assert len(rows) == 20 and {(r.status, r.attempt) for r in rows} == {
        ("SUCCESS", 1)
    }  # none failed or retried
    assert target.done == 20
    assert target.max_in_flight <= 3, f"{target.max_in_flight} requests at once at the target"
    assert target.max_in_flight >= 2, "the attempts never overlapped: the test proved nothing"
    assert max(samples_db) <= 3


def _statuses(engine: Engine, run_ids: list[int]) -> list[str]:
    c = runs_table.c
    with engine.connect() as conn:
        return [str(s) for s in conn.scalars(select(c.status).where(c.id.in_(run_ids)))]


def test_claim_within_limit_counts_running_attempts_under_the_jobs_lock(mysql_engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta

    spec = JobSpec.model_validate(
        {"name": "two", "handlerType": "http", "handlerData": "http://127.0.0.1:9/x", "maxConcurrency": 2}
    )
    job = create_job(mysql_engine, spec)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    runs = [
        insert_run(mysql_engine, job_id=job.id, scheduled_for=at + timedelta(seconds=i)) for i in range(6)
    ]
    results: list[Claim] = []
    lock = threading.Lock()

    def claim(run_id: int) -> None:
        answer = claim_within_limit(mysql_engine, run_id, f"w{run_id}", job_id=job.id)
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=claim, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.value for r in results) == ["claimed", "claimed", "full", "full", "full", "full"]
    assert running(mysql_engine, job.id) == 2
    # Claimed already: TAKEN, not FULL-then-retried forever; NULL limit: no counting at all.
    claimed = [r for r in runs if _statuses(mysql_engine, [r]) == ["RUNNING"]]
    assert claim_within_limit(mysql_engine, claimed[0], "other", job_id=job.id) is Claim.FULL
    with mysql_engine.begin() as conn:
        conn.execute(
            runs_table.update().where(runs_table.c.id == claimed[0]).values(status=RunStatus.SUCCESS.value)
        )
    assert claim_within_limit(mysql_engine, claimed[1], "other", job_id=job.id) is Claim.TAKEN
    free = [r for r in runs if r not in claimed]
    assert claim_within_limit(mysql_engine, free[0], "w", job_id=job.id) is Claim.CLAIMED
    assert claim_within_limit(mysql_engine, free[1], "w", job_id=job.id) is Claim.FULL
