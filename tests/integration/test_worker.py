"""The worker on real MariaDB, RabbitMQ and Redis: exactly-once execution, retries, DLQ, timeouts, http."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlalchemy import Engine

from tests import worker_jobs
from tests.worker_helpers import runs_of_job, statuses, wait_for, worker_processes
from tickwork.config import Settings
from tickwork.keys import worker_heartbeats_since_key
from tickwork.messaging import build_message, publish
from tickwork.middleware.dead_letter import dlq_messages, list_dead, purge, replay
from tickwork.spec import JobSpec
from tickwork.store.jobs import create_job, get_job_by_name
from tickwork.store.models import HandlerType, RunTrigger
from tickwork.store.runs import get_run
from tickwork.worker import WorkerHandle, setup_broker, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def consumers(settings: Settings, queue: str) -> int:
    """Consumers on ``queue``; 0 while no worker has declared it yet (RabbitMQ answers 404)."""
    import pika
    import pika.exceptions

    conn = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return 0
        raise
    finally:
        conn.close()


@pytest.fixture
def publisher(cluster_settings: Settings, mysql_engine: Engine) -> Iterator[dramatiq.Broker]:
    """The test process's tickwork broker (publishes; ``fn.send`` uses it)."""
    broker = setup_broker(cluster_settings, engine=mysql_engine)
    yield broker
    broker.close()


@pytest.fixture
def inproc_worker(cluster_settings: Settings, publisher: dramatiq.Broker) -> Iterator[WorkerHandle]:
    handle = start_worker(cluster_settings, publisher, threads=4)
    yield handle
    handle.stop(10)


def test_same_attempt_delivered_and_published_twice_runs_once(
    cluster_settings: Settings, mysql_engine: Engine, publisher: dramatiq.Broker, tmp_path: Path
) -> None:
    """Three copies of each of 20 attempts are published in one batch to two consuming worker
    processes (4 threads each): RabbitMQ hands consecutive copies to different consumers, so
    copies of one attempt race each other across processes for the claim. Each attempt runs
    once; the other 40 copies are skipped."""
    from tickwork.store.models import utcnow
    from tickwork.store.runs import insert_run

    marker = tmp_path / "runs.txt"
    worker_jobs.tw_record.send(str(marker), "warm-up")  # registers the job
    job = get_job_by_name(mysql_engine, "tw_record")
    now = utcnow()
    runs: dict[int, dict[str, Any]] = {}
    for i in range(20):
        arguments = {"args": [str(marker), f"run{i}"], "kwargs": {}}
        fire = now + timedelta(microseconds=i)
        runs[insert_run(mysql_engine, job_id=job.id, scheduled_for=fire, arguments=arguments)] = {
            "arguments": arguments,
            "fire": fire,
        }
    messages = []
    for run_id, run in runs.items():
        message = build_message(
            cluster_settings,
            job,
            run_id=run_id,
            attempt=1,
            scheduled_for=run["fire"],
            arguments=run["arguments"],
        )
        messages += [message, message, message]
    queue = f"{cluster_settings.namespace}.default"
    with worker_processes(cluster_settings, tmp_path, 2, threads=4) as workers:
        # Heartbeats start before the consumers do: wait until both processes consume the queue.
        wait_for(lambda: consumers(cluster_settings, queue) >= 2, 30, what="two consumers on the queue")
        publish(publisher, messages)
        wait_for(
            lambda: all(get_run(mysql_engine, r).status == "SUCCESS" for r in runs), 30, what="20 successes"
        )
        wait_for(lambda: sum(publisher.get_queue_message_counts(queue)[:2]) == 0, 20, what="queue drained")  # type: ignore[attr-defined]
        time.sleep(1.0)  # let the last duplicates be delivered and skipped
        skipped = [w.output().count("is already claimed or finished; skipping") for w in workers]
    lines = [line for line in marker.read_text().splitlines() if not line.startswith("warm-up")]
    assert sorted(line.split()[0] for line in lines) == sorted(f"run{i}" for i in range(20))
    rows = [r for r in runs_of_job(mysql_engine, job.id) if r.id in runs]
    assert len(rows) == 20
    assert {r.status for r in rows} == {"SUCCESS"}
    assert all(r.attempt == 1 and r.worker_id for r in rows)
    # Both processes received copies (RabbitMQ round-robins them); every copy but the claimed
    # one was skipped, whichever process held it.
    assert sum(skipped) == 40 and all(skipped), skipped


def test_retries_back_off_then_dead_letter_and_replay(
    cluster_settings: Settings, mysql_engine: Engine, publisher: dramatiq.Broker, tmp_path: Path
) -> None:
    marker = tmp_path / "fails.txt"
    with worker_processes(cluster_settings, tmp_path, 2, threads=2):
        first = worker_jobs.tw_always_fails.send(str(marker))
        job_id = get_run(mysql_engine, first).job_id
        wait_for(lambda: "DEAD" in statuses(mysql_engine, job_id), 30, 0.2, "the run to go DEAD")
        rows = runs_of_job(mysql_engine, job_id)
        assert [r.attempt for r in rows] == [1, 2, 3, 4]
        assert [r.status for r in rows] == ["FAILED", "FAILED", "FAILED", "DEAD"]
        assert [r.trigger for r in rows] == ["manual", "retry", "retry", "retry"]
        assert all(r.error == "RuntimeError: always fails" and r.traceback for r in rows)
        gaps = []
        for prev, nxt in itertools.pairwise(rows):
            assert prev.finished_at is not None and nxt.started_at is not None
            gaps.append((nxt.started_at - prev.finished_at).total_seconds())
        print("retry gaps (s):", gaps)
        for gap, base in zip(gaps, [1, 2, 4], strict=True):
            # Never earlier than the backoff; at most 10 % jitter plus delivery latency later.
            assert base <= gap <= base * 1.1 + 0.75, gaps
        dead = rows[-1]
        letters = wait_for(lambda: dlq_messages(cluster_settings), 10, what="a dead letter")
        assert [m["run_id"] for m in letters] == [dead.id]
        assert letters[0]["error"] == "RuntimeError: always fails"
        assert letters[0]["attempt"] == 4 and letters[0]["job_name"] == "tw_always_fails"
        assert [r.id for r in list_dead(mysql_engine)] == [dead.id]

        new_id = replay(cluster_settings, mysql_engine, publisher, dead.id)
        wait_for(lambda: get_run(mysql_engine, new_id).status == "DEAD", 20, what="the replay to run")
        replayed = get_run(mysql_engine, new_id)
        assert replayed.attempt == 5 and replayed.trigger == RunTrigger.REPLAY
        assert get_run(mysql_engine, dead.id).status == "REPLAYED"
        assert len(marker.read_text().splitlines()) == 5  # four attempts, then the replay
        letters = wait_for(lambda: dlq_messages(cluster_settings), 10, what="the replay's dead letter")
        assert [m["run_id"] for m in letters] == [new_id]

        assert purge(cluster_settings, mysql_engine, publisher, [new_id]) == 1
        assert get_run(mysql_engine, new_id).status == "DISCARDED"
        assert dlq_messages(cluster_settings) == []
        assert list_dead(mysql_engine) == []


def test_a_run_of_an_unknown_handler_is_settled_dead_like_any_dead_run(
    cluster_settings: Settings, mysql_engine: Engine, publisher: dramatiq.Broker, tmp_path: Path
) -> None:
    """No worker has the job's function: the run goes DEAD with the reason, a copy lands on the
    dead-letter queue (replayable once a worker has it) and it counts toward pauseAfterFailures."""
    from tickwork.store.jobs import get_job
    from tickwork.store.runs import insert_run
    from tickwork.vocabulary import utcnow

    job = create_job(
        mysql_engine,
        JobSpec.model_validate(
            {
                "name": "unknown-handler",
                "handlerType": "python",
                "handlerData": "tests.nowhere.missing",
                "retryCount": 3,
                "pauseAfterFailures": 1,
            }
        ),
    )
    now = utcnow()
    run_id = insert_run(mysql_engine, job_id=job.id, scheduled_for=now)
    message = build_message(cluster_settings, job, run_id=run_id, attempt=1, scheduled_for=now)
    with worker_processes(cluster_settings, tmp_path, 1, threads=2):
        publish(publisher, [message])
        wait_for(lambda: get_run(mysql_engine, run_id).status == "DEAD", 30, 0.2, "the run to go DEAD")
        letters = wait_for(lambda: dlq_messages(cluster_settings), 10, what="a dead letter")
    run = get_run(mysql_engine, run_id)
    assert run.attempt == 1 and (run.error or "").startswith("unknown handler: no @job function named")
    assert [m["run_id"] for m in letters] == [run_id]
    assert letters[0]["error"] == run.error
    assert [r.id for r in list_dead(mysql_engine)] == [run_id]
    paused = get_job(mysql_engine, job.id)
    assert not paused.enabled and (paused.paused_reason or "").startswith("auto: 1 consecutive dead run")


def test_sync_and_async_timeouts(
    cluster_settings: Settings, mysql_engine: Engine, inproc_worker: WorkerHandle
) -> None:
    sync_run = worker_jobs.tw_sync_sleep.send(10)
    async_run = worker_jobs.tw_async_sleep.send(10)
    sync_job = get_run(mysql_engine, sync_run).job_id
    async_job = get_run(mysql_engine, async_run).job_id
    wait_for(lambda: statuses(mysql_engine, sync_job) == ["FAILED", "DEAD"], 20, what="sync timeouts")
    wait_for(lambda: statuses(mysql_engine, async_job) == ["DEAD"], 20, what="async timeout")
    for row in runs_of_job(mysql_engine, sync_job) + runs_of_job(mysql_engine, async_job):
        assert row.error == "timeout after 1 s"
        assert row.started_at is not None and row.finished_at is not None
        took = (row.finished_at - row.started_at).total_seconds()
        assert 0.95 <= took <= 2.5, took
    # The retried sync attempt waited its backoff.
    first, second = runs_of_job(mysql_engine, sync_job)
    assert first.finished_at is not None and second.started_at is not None
    assert second.started_at - first.finished_at >= timedelta(seconds=1)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/ok"):
            body = f"hello {self.path}".encode()
            self.send_response(200)
        elif self.path.startswith("/fail"):
            body = b"boom"
            self.send_response(503)
        elif self.path.startswith("/slow"):
            time.sleep(3)
            body = b"late"
            self.send_response(200)
        else:
            body = b"?"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        data = self.rfile.read(length)
        body = b"got " + data + b" " + (self.headers.get("X-Token") or "").encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_actor(
    cluster_settings: Settings,
    mysql_engine: Engine,
    publisher: dramatiq.Broker,
    inproc_worker: WorkerHandle,
    http_server: str,
) -> None:
    from tickwork.messaging import fire_now

    cases: dict[str, dict[str, Any]] = {
        "ok": {"handlerData": f"{http_server}/ok?x=1", "parameters": {"method": "GET"}},
        "post": {
            "handlerData": f"{http_server}/post",
            "parameters": {"body": "payload", "headers": {"X-Token": "t0k"}},
        },
        "fail": {"handlerData": f"{http_server}/fail", "parameters": {"method": "GET"}},
        "slow": {"handlerData": f"{http_server}/slow", "timeoutSeconds": 1, "parameters": {"method": "GET"}},
        "refused": {"handlerData": f"http://127.0.0.1:{_free_port()}/"},
        "denied": {"handlerData": "http://169.254.169.254/latest/meta-data/"},
    }
    run_ids = {}
    for name, fields in cases.items():
        spec = JobSpec.model_validate({"name": f"http-{name}", "handlerType": "http", **fields})
        job = create_job(mysql_engine, spec)
        assert job.handler_type == HandlerType.HTTP
        run_ids[name] = fire_now(cluster_settings, mysql_engine, publisher, job)
    wait_for(
        lambda: all(get_run(mysql_engine, r).status in ("SUCCESS", "DEAD") for r in run_ids.values()),
        20,
        what="http runs",
    )
    runs = {name: get_run(mysql_engine, r) for name, r in run_ids.items()}
    assert runs["ok"].status == "SUCCESS"
    assert (runs["ok"].output, runs["ok"].http_status) == ("hello /ok?x=1", 200)
    assert runs["post"].status == "SUCCESS"
    assert (runs["post"].output, runs["post"].http_status) == ("got payload t0k", 201)
    assert runs["fail"].status == "DEAD"
    assert runs["fail"].error == "HTTP 503 Service Unavailable"
    assert (runs["fail"].output, runs["fail"].http_status) == ("boom", 503)
    # Expected failures are described by ``error``; a traceback is for Python handlers' surprises.
    assert all(r.traceback is None for r in runs.values())
    assert runs["slow"].status == "DEAD" and runs["slow"].error == "timeout after 1 s"
    assert runs["refused"].status == "DEAD"
    assert (runs["refused"].error or "").startswith("connection failed"), runs["refused"].error
    assert runs["denied"].status == "DEAD"
    assert runs["denied"].error == "denied: address 169.254.169.254 is in denied network 169.254.0.0/16"


def test_worker_picks_up_the_queue_of_a_job_created_after_it_started(
    cluster_settings: Settings, mysql_engine: Engine, publisher: dramatiq.Broker, tmp_path: Path
) -> None:
    from tickwork.messaging import fire_now

    # A worker process (not this process's broker, which would declare the queue when publishing).
    with worker_processes(cluster_settings, tmp_path, 1, threads=2):
        job = create_job(
            mysql_engine,
            JobSpec(name="late-queue", handler_type=HandlerType.PYTHON, handler_data="tw_add", queue="fast",
                    parameters={"a": 1, "b": 2}),
        )  # fmt: skip
        run_id = fire_now(cluster_settings, mysql_engine, publisher, job)
        wait_for(lambda: get_run(mysql_engine, run_id).status == "SUCCESS", 20, what="the new queue consumed")
    assert get_run(mysql_engine, run_id).output == "3"


def test_a_failed_retry_write_is_retried_never_dead_lettered(
    cluster_settings: Settings,
    mysql_engine: Engine,
    publisher: dramatiq.Broker,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A brief database error while recording a failure must not turn a run with retries left
    into DEAD (DeadLetter once did that when Backoff's write raised)."""
    from sqlalchemy.exc import OperationalError

    from tickwork import lifecycle

    real = lifecycle.finish_and_retry
    calls = itertools.count()

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == 0:
            raise OperationalError("UPDATE job_runs", {}, Exception("server has gone away"))
        return real(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "finish_and_retry", flaky)
    handle = start_worker(cluster_settings, publisher, threads=2)
    try:
        first = worker_jobs.tw_always_fails.send(str(tmp_path / "fails.txt"))
        job_id = get_run(mysql_engine, first).job_id
        wait_for(lambda: len(statuses(mysql_engine, job_id)) >= 2, 20, what="the first retry")
    finally:
        handle.stop(10)
    rows = runs_of_job(mysql_engine, job_id)
    assert (rows[0].attempt, rows[0].status) == (1, "FAILED")
    assert rows[1].attempt == 2 and rows[1].status != "DEAD"


def test_reaper_waits_one_ttl_after_redis_lost_the_heartbeats(
    cluster_settings: Settings, mysql_engine: Engine, publisher: dramatiq.Broker
) -> None:
    """Redis restarted empty: every heartbeat is missing until the workers beat again. A missing
    heartbeat is believed only once the heartbeats have been kept for one TTL; a worker that beats
    within that TTL keeps its attempt, one that does not is reaped after it."""
    from tickwork.middleware.heartbeat import WORKER_LOST, HeartbeatStore, reap_lost_attempts
    from tickwork.store.models import utcnow
    from tickwork.store.runs import claim_attempt, insert_run

    settings = cluster_settings.model_copy(update={"heartbeat_ttl_seconds": 2.0})
    job = get_job_by_name(mysql_engine, "tw_long")
    store = HeartbeatStore.from_settings(settings)
    try:
        base = utcnow() - timedelta(seconds=30)
        live = insert_run(mysql_engine, job_id=job.id, scheduled_for=base)
        gone = insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=1))
        assert claim_attempt(mysql_engine, live, "w-live", now=base)
        assert claim_attempt(mysql_engine, gone, "w-gone", now=base)
        store.redis.delete(worker_heartbeats_since_key(settings.namespace))  # "Redis restarted"
        lost_at = time.monotonic()
        assert reap_lost_attempts(settings, mysql_engine, publisher, store) == 0
        assert 0 <= store.kept_for() < settings.heartbeat_ttl_seconds
        store.beat("w-live", {"beat_at": utcnow().isoformat(), "in_flight": [live]})  # beats again
        assert reap_lost_attempts(settings, mysql_engine, publisher, store) == 0
        assert get_run(mysql_engine, gone).status == "RUNNING"

        def beat_and_reap() -> bool:
            store.beat("w-live", {"beat_at": utcnow().isoformat(), "in_flight": [live]})
            return reap_lost_attempts(settings, mysql_engine, publisher, store) == 1

        wait_for(
            beat_and_reap,
            10,
            0.1,
            "the silent worker's attempt to be reaped after one TTL",
        )
        assert time.monotonic() - lost_at >= settings.heartbeat_ttl_seconds
        assert (get_run(mysql_engine, gone).status, get_run(mysql_engine, gone).error) == (
            "FAILED",
            WORKER_LOST,
        )
        assert get_run(mysql_engine, live).status == "RUNNING"
    finally:
        store.close()


def test_reaper_retries_lost_and_abandoned_attempts_but_not_live_ones(
    cluster_settings: Settings, mysql_engine: Engine, publisher: dramatiq.Broker
) -> None:
    """Real Redis heartbeats: a dead worker's attempt is ``worker lost``; a live worker's attempt
    missing from its in-flight list (its outcome could not be written) is ``abandoned``; an
    attempt a live worker lists, or one that started after its last beat, is left alone."""
    from datetime import datetime

    from tickwork.middleware.heartbeat import ABANDONED, WORKER_LOST, HeartbeatStore, reap_lost_attempts
    from tickwork.store.models import utcnow
    from tickwork.store.runs import claim_attempt, insert_run

    job = get_job_by_name(mysql_engine, "tw_long")  # retries=2
    store = HeartbeatStore.from_settings(cluster_settings)
    try:
        base = utcnow() - timedelta(seconds=30)
        runs = {
            name: insert_run(mysql_engine, job_id=job.id, scheduled_for=base + timedelta(seconds=i))
            for i, name in enumerate(("lost", "abandoned", "held", "fresh"))
        }
        assert claim_attempt(mysql_engine, runs["lost"], "w-gone", now=base)
        for name in ("abandoned", "held"):
            assert claim_attempt(mysql_engine, runs[name], "w-live", now=base)
        beat_at = utcnow()
        assert claim_attempt(mysql_engine, runs["fresh"], "w-live", now=beat_at)  # after the beat
        store.beat("w-live", {"beat_at": beat_at.isoformat(), "in_flight": [runs["held"]]})
        # Heartbeats kept for an hour: a missing one is believed (see the next test for less).
        since = worker_heartbeats_since_key(cluster_settings.namespace)
        store.redis.set(since, repr(store.redis.time()[0] - 3600.0))

        assert reap_lost_attempts(cluster_settings, mysql_engine, publisher, store) == 2
        assert reap_lost_attempts(cluster_settings, mysql_engine, publisher, store) == 0  # once only
        got = {name: get_run(mysql_engine, run_id) for name, run_id in runs.items()}
        assert (got["lost"].status, got["lost"].error) == ("FAILED", WORKER_LOST)
        assert (got["abandoned"].status, got["abandoned"].error) == ("FAILED", ABANDONED)
        assert got["held"].status == "RUNNING" and got["fresh"].status == "RUNNING"
        retries = [r for r in runs_of_job(mysql_engine, job.id) if r.attempt == 2]
        assert sorted(r.scheduled_for for r in retries) == sorted(
            got[name].scheduled_for for name in ("lost", "abandoned")
        )
        assert all(r.status == "PENDING" and isinstance(r.available_at, datetime) for r in retries)
    finally:
        store.close()
