"""Scheduling benchmark: publish lag, consumer lag, fires/s, CPU, failover gap, exactly-once.

For each size N (active schedules), on the real services (MariaDB, Redis, RabbitMQ):

* N jobs at 1,000 fires per second in total: N=1,000 → ``* * * * * *`` each; N=10,000 → every
  10 s, spread over the 10 offsets (``k/10 * * * * *``): 1,000 fires at every whole second.
* two ``tickwork scheduler`` processes (leader + standby), a consumer thread that records when
  each message arrives (the moment a worker would start it);
* after ``--kill-at`` seconds the leader is SIGKILLed; the standby takes over.

Reported per size: publish lag (``scheduled_for`` → ``enqueued_at``, i.e. after the batch is
durable on RabbitMQ) and consumer lag (→ message received) p50/p99/max in steady state (before
the kill), fires/s sustained, leader CPU per 1,000 schedules, the failover gap (SIGKILL → first
publish by the new leader), and duplicates/misses over the whole window. An instant's 1,000
attempts share one ``enqueued_at`` (the batch's commit), so with ~13 instants before the kill
the p99 is the slowest instant's lag; ``lag_p99_per_second_ms`` has each instant's.

Each phase (the anchor, each size, the end-to-end run) starts once MariaDB's purge has caught up
and the CPU was at least 80 % idle for a second (bounded; found and waited under ``conditions``).

Then, end to end: ``--e2e-schedules`` per-second schedules (default 200) through one scheduler
and two real ``tickwork worker`` processes; ``scheduled_for`` → ``started_at`` (the worker's
claim) from ``job_runs``.

Run: ``PYTHONPATH=. python benchmarks/scheduling.py --sizes 1000 10000 --duration 24``
Writes ``benchmarks/results/scheduling.json`` and ``benchmarks/results/scheduling.png``.

``--late-after N`` (issue 13) sets ``lateAfterSeconds`` on every job, so the leader's alert sweep
decides every fire (nothing runs them here: every fire is late once N seconds pass).

``--notify-backlog N`` (issue 13) puts N webhook notifications in the outbox before the run, all
to a loopback receiver answering 500 at once, with a 50 ms retry backoff: the leader's delivery
thread POSTs and re-records them for the whole run (the worst case of a receiver down), so the
publish lag can be compared with a run without (``--notify-backlog 0``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import redis
from sqlalchemy import create_engine, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.databases import MYSQL, create_database  # noqa: E402
from benchmarks.stats import lag_summary, percentile  # noqa: E402
from benchmarks.worker_throughput import (  # noqa: E402
    add_queue_version_option,
    delete_keys,
    delete_queues,
    queue_version,
    settle_machine,
    wait_for_consumers,
)
from tickwork.config import load_settings  # noqa: E402
from tickwork.keys import leader_key  # noqa: E402
from tickwork.messaging import queue_name  # noqa: E402
from tickwork.scheduler.policy import cron_schedule  # noqa: E402
from tickwork.store.engine import make_engine, upgrade  # noqa: E402
from tickwork.store.models import jobs_table, runs_table  # noqa: E402

REDIS = os.environ.get("TICKWORK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP = os.environ.get("TICKWORK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


class Receiver(threading.Thread):
    def __init__(self, url: str, queue: str) -> None:
        super().__init__(daemon=True)
        self.url, self.queue = url, queue
        self.stop = threading.Event()
        self.received: dict[int, float] = {}
        self.dup_messages = 0

    def run(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        ch = conn.channel()
        ch.queue_declare(
            self.queue,
            durable=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.queue + ".XQ"},
        )
        ch.basic_qos(prefetch_count=2000)
        for method, _props, body in ch.consume(self.queue, inactivity_timeout=0.2):
            if method is not None:
                now = time.time()
                run_id = json.loads(body)["options"]["tickwork"]["run_id"]
                if run_id in self.received:
                    self.dup_messages += 1
                else:
                    self.received[run_id] = now
                ch.basic_ack(method.delivery_tag, multiple=True)
            if self.stop.is_set():
                break
        ch.cancel()
        for suffix in ("", ".DQ", ".XQ"):
            ch.queue_delete(self.queue + suffix)
        conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: Settings given to every tickwork process of the run (``--set NAME=VALUE``).
EXTRA_SETTINGS: dict[str, str] = {}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo): the machines these runs land on differ."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def wait_for_workers(namespace: str, processes: int = 2, queue: str = "bench") -> float:
    """Seconds until ``processes`` worker processes consume ``queue`` (they have booted and
    registered their ``@job`` functions by then); replaces a fixed sleep for worker boot."""
    settings = load_settings(broker_url=AMQP, namespace=namespace)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    try:
        return wait_for_consumers(connection, queue_name(settings, queue), processes)
    finally:
        connection.close()


def tickwork_env(url: str, namespace: str, **extra: str) -> dict[str, str]:
    """The environment of a ``tickwork`` subprocess on this run's database and namespace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env.update(EXTRA_SETTINGS)
    env.update(
        PYTHONPATH=str(ROOT),
        TICKWORK_DATABASE_URL=url,
        TICKWORK_BROKER_URL=AMQP,
        TICKWORK_REDIS_URL=REDIS,
        TICKWORK_NAMESPACE=namespace,
        TICKWORK_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        **extra,
    )
    return env


class RefusingReceiver:
    """A loopback webhook receiver answering every POST with 500 (and counting them)."""

    def __init__(self) -> None:
        import http.server

        owner = self
        self.posts = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                owner.posts += 1
                self.send_response(500)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fill_outbox(engine: Any, target: str, count: int) -> None:
    from tickwork.store.models import notifications_table

    now = datetime.now(UTC)
    rows = [
        {
            "event": "run.dead",
            "job_id": None,
            "run_id": None,
            "target": target,
            "payload": json.dumps({"event": "run.dead", "n": i}),
            "status": "PENDING",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        for chunk in range(0, count, 2000):
            conn.execute(insert(notifications_table), rows[chunk : chunk + 2000])


def late_marked(engine: Any) -> int:
    from sqlalchemy import func

    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).where(runs_table.c.late_at.is_not(None))) or 0)


def delivery_attempts(engine: Any) -> int:
    from sqlalchemy import func

    from tickwork.store.models import notifications_table

    with engine.connect() as conn:
        return int(conn.scalar(select(func.coalesce(func.sum(notifications_table.c.attempts), 0))) or 0)


def run_size(
    size: int,
    duration: float,
    kill_at: float,
    workdir: Path,
    notify_backlog: int = 0,
    late_after: int | None = None,
) -> dict[str, Any]:
    name, server, url = create_database("tw_bench")
    procs: list[subprocess.Popen[bytes]] = []
    refusing: RefusingReceiver | None = None
    try:
        upgrade(url)
        engine = make_engine(url)
        settings = load_settings(database_url=url, broker_url=AMQP, redis_url=REDIS, namespace=name)
        period = max(1, size // 1000)
        start_at = datetime.fromtimestamp(math.ceil(time.time()) + 6, UTC)
        now = datetime.now(UTC)
        rows = []
        for i in range(size):
            expr = "* * * * * *" if period == 1 else f"{i % period}/{period} * * * * *"
            first = cron_schedule(expr, "UTC").next_fire(start_at - timedelta(microseconds=1))
            rows.append(
                {
                    "name": f"bench-{i}",
                    "cron_expression": expr,
                    "timezone": "UTC",
                    "handler_type": "python",
                    "handler_data": "bench.noop",
                    "retry_count": 0,
                    "retry_backoff_seconds": 10,
                    "max_backoff_seconds": 3600,
                    "queue": "default",
                    "misfire_policy": "fire_once",
                    "overlap_policy": "allow",
                    "enabled": True,
                    "source": "api",
                    "next_fire_at": first,
                    "late_after_seconds": late_after,
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        with engine.begin() as conn:
            for chunk in range(0, size, 2000):
                conn.execute(insert(jobs_table), rows[chunk : chunk + 2000])
            if late_after:
                from tickwork.store.models import watermarks_table

                ids = list(conn.scalars(select(jobs_table.c.id)))
                conn.execute(insert(watermarks_table), [{"job_id": i, "checked_until": now} for i in ids])
        receiver = Receiver(AMQP, queue_name(settings, "default"))
        receiver.start()
        notify_env: dict[str, str] = {}
        if notify_backlog:
            refusing = RefusingReceiver()
            fill_outbox(engine, refusing.url, notify_backlog)
            notify_env = {
                "TICKWORK_NOTIFY_BACKOFF_SECONDS": "0.05",
                "TICKWORK_NOTIFY_MAX_BACKOFF_SECONDS": "0.05",
                "TICKWORK_NOTIFY_DEADLINE_SECONDS": "3600",
            }
        env = tickwork_env(url, name, **notify_env)
        for i in range(2):
            log = open(workdir / f"bench-{size}-{i}.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tickwork", "scheduler", "--node-id", f"b{i}"],
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
        client = redis.Redis.from_url(REDIS)
        time.sleep(max(0.0, start_at.timestamp() - time.time()))
        t0 = time.time()
        raw = client.get(leader_key(name))
        leader = raw.decode().split(" ")[0] if raw else "b0"
        leader_proc = procs[int(leader[1:])]
        cpu0 = cpu_seconds(leader_proc.pid)
        time.sleep(kill_at)
        cpu1 = cpu_seconds(leader_proc.pid)
        steady_wall = time.time() - t0
        lease_left_ms = int(client.pttl(leader_key(name)))
        old_value = client.get(leader_key(name))
        kill_time = time.time()
        leader_proc.send_signal(signal.SIGKILL)
        leader_proc.wait()
        # When the standby holds the lease (polled every 2 ms): the gap's first part.
        takeover_ms = None
        while time.time() - kill_time < 10:
            value = client.get(leader_key(name))
            if value is not None and value != old_value:
                takeover_ms = round((time.time() - kill_time) * 1000)
                break
            time.sleep(0.002)
        time.sleep(max(0.0, t0 + duration - time.time()))
        stop_time = time.time()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=20)
        time.sleep(1.0)
        receiver.stop.set()
        receiver.join(timeout=20)
        client.close()

        with engine.connect() as conn:
            runs = list(
                conn.execute(
                    select(
                        runs_table.c.id,
                        runs_table.c.job_id,
                        runs_table.c.scheduled_for,
                        runs_table.c.enqueued_at,
                        runs_table.c.status,
                    )
                ).mappings()
            )
            job_crons = {
                r[0]: r[1] for r in conn.execute(select(jobs_table.c.id, jobs_table.c.cron_expression))
            }
        first = datetime.fromtimestamp(math.ceil(t0), UTC)
        last = datetime.fromtimestamp(math.floor(stop_time) - 1, UTC)
        window = [r for r in runs if first <= r["scheduled_for"] <= last]
        per_fire = Counter((r["job_id"], r["scheduled_for"]) for r in window)
        expected = 0
        second = first
        while second <= last:
            expected += sum(
                1 for c in job_crons.values() if period == 1 or int(c.split("/")[0]) == second.second % period
            )
            second += timedelta(seconds=1)
        kill_dt = datetime.fromtimestamp(kill_time, UTC)
        steady = [r for r in window if r["scheduled_for"] < kill_dt - timedelta(seconds=0.5)]
        publish_lag = [
            (r["enqueued_at"] - r["scheduled_for"]).total_seconds() * 1000 for r in steady if r["enqueued_at"]
        ]
        consumer_lag = [
            (receiver.received[r["id"]] - r["scheduled_for"].timestamp()) * 1000
            for r in steady
            if r["id"] in receiver.received
        ]
        after = sorted(r["enqueued_at"] for r in runs if r["enqueued_at"] and r["enqueued_at"] > kill_dt)
        per_second = Counter(int(r["scheduled_for"].timestamp()) for r in steady)
        lag_series: dict[int, list[float]] = {}
        for r in window:
            if r["enqueued_at"]:
                key = int(r["scheduled_for"].timestamp() - t0)
                lag_series.setdefault(key, []).append(
                    (r["enqueued_at"] - r["scheduled_for"]).total_seconds() * 1000
                )
        published_per_second = Counter(int(r["enqueued_at"].timestamp()) for r in runs if r["enqueued_at"])
        result = {
            "schedules": size,
            "fires_per_second_scheduled": size // period,
            "window_seconds": int((last - first).total_seconds()) + 1,
            "fires_expected": expected,
            "fires_recorded": len(per_fire),
            "duplicates": sum(v - 1 for v in per_fire.values() if v > 1),
            "misses": expected - len(per_fire),
            "statuses": dict(Counter(r["status"] for r in window)),
            "never_published": sum(1 for r in window if r["enqueued_at"] is None),
            "never_received": sum(1 for r in window if r["id"] not in receiver.received),
            "duplicate_messages_received": receiver.dup_messages,
            "publish_lag_ms": lag_summary(publish_lag),
            "consumer_lag_ms": lag_summary(consumer_lag),
            "fires_per_second_sustained": len(steady) / max(1, len(per_second)),
            # The most attempts published in one wall-clock second (the catch-up after the kill
            # shows the ticker's ceiling: it publishes the backlog as fast as it can).
            "peak_published_per_second": max(published_per_second.values()),
            "leader_cpu_percent": 100 * (cpu1 - cpu0) / steady_wall,
            "leader_cpu_percent_per_1000_schedules": 100 * (cpu1 - cpu0) / steady_wall / (size / 1000),
            "failover_gap_seconds": (after[0] - kill_dt).total_seconds() if after else None,
            # What the dead leader's lease had left when it was killed: the standby cannot take
            # over before that; the rest of the gap is the takeover's first fire and publish.
            "failover_lease_left_ms": lease_left_ms,
            "failover_takeover_ms": takeover_ms,
            "failover_max_publish_lag_ms": max(
                (
                    (r["enqueued_at"] - r["scheduled_for"]).total_seconds() * 1000
                    for r in window
                    if r["enqueued_at"]
                ),
                default=None,
            ),
            "kill_at_seconds": kill_at,
            "notify_backlog": notify_backlog,
            "late_after_seconds": late_after,
            "fires_marked_late": late_marked(engine) if late_after else 0,
            "delivery_attempts": delivery_attempts(engine) if notify_backlog else 0,
            "lag_p99_per_second_ms": {k: percentile(v, 0.99) for k, v in sorted(lag_series.items())},
        }
        engine.dispose()
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        if refusing is not None:
            refusing.close()
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()
        delete_keys(REDIS, name)


def run_end_to_end(size: int, duration: float, workdir: Path) -> dict[str, Any]:
    """``size`` per-second no-op schedules through a real scheduler and two real ``tickwork
    worker`` processes: ``scheduled_for`` → ``started_at`` (the claim) from ``job_runs``."""
    name, server, url = create_database("tw_e2e")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(url)
        engine = make_engine(url)
        env = tickwork_env(url, name, TICKWORK_IMPORTS="benchmarks.worker_throughput_jobs")
        log = open(workdir / "bench-e2e.log", "wb")  # noqa: SIM115
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
        start_at = datetime.fromtimestamp(math.ceil(time.time()) + 4, UTC)
        now = datetime.now(UTC)
        rows = [
            {
                "name": f"e2e-{i}", "cron_expression": "* * * * * *", "timezone": "UTC",
                "handler_type": "python", "handler_data": "bench_noop", "retry_count": 0,
                "retry_backoff_seconds": 10, "max_backoff_seconds": 3600, "queue": "bench",
                "misfire_policy": "fire_once", "overlap_policy": "allow", "enabled": True,
                "source": "api", "next_fire_at": start_at, "version": 1,
                "created_at": now, "updated_at": now,
            }
            for i in range(size)
        ]  # fmt: skip
        with engine.begin() as conn:
            conn.execute(insert(jobs_table), rows)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tickwork", "scheduler", "--node-id", "e2e"],
                env=env,
                stdout=log,
                stderr=log,
            )
        )
        time.sleep(max(0.0, start_at.timestamp() - time.time()) + duration)
        procs[1].send_signal(signal.SIGTERM)
        procs[1].wait(timeout=20)
        time.sleep(3)  # the workers finish what was published
        with engine.connect() as conn:
            runs = list(
                conn.execute(
                    select(runs_table.c.scheduled_for, runs_table.c.enqueued_at, runs_table.c.started_at)
                ).mappings()
            )
        engine.dispose()
        started = [
            (r["started_at"] - r["scheduled_for"]).total_seconds() * 1000 for r in runs if r["started_at"]
        ]
        published = [
            (r["enqueued_at"] - r["scheduled_for"]).total_seconds() * 1000 for r in runs if r["enqueued_at"]
        ]
        return {
            "schedules": size,
            "fires_per_second": size,
            "workers": "2 processes x 8 threads",
            "runs": len(runs),
            "runs_started": len(started),
            "publish_lag_ms": lag_summary(published),
            "start_lag_ms": lag_summary(started),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # the worker's SIGTERM reaches its children
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        with server.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()
        delete_queues(AMQP, name, ("bench", "benchlat", "bare", "barelat", "default"))
        delete_keys(REDIS, name)


def run_apscheduler_anchor(jobs: int, duration: float, warmup: float = 3.0) -> dict[str, Any]:
    """The anchor: APScheduler 3 in this process, ``jobs`` cron jobs firing every second (no store,
    no broker), its defaults otherwise (BackgroundScheduler, a 10-thread pool, max_instances 1).

    ``dispatch`` lag: scheduled time → the job handed to the executor (the listener of
    EVENT_JOB_SUBMITTED, which APScheduler dispatches right after the submission): what
    tickwork's publish lag is to a broker. ``start`` lag: scheduled time → the job function
    running, taken as the time past the whole second (valid while every lag is under 1 s;
    ``start_valid`` says whether it was).
    """
    from apscheduler.events import EVENT_JOB_SUBMITTED
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    dispatch: list[tuple[float, float]] = []  # (scheduled, lag s)
    starts: list[float] = []
    lock = threading.Lock()

    def listener(event: Any) -> None:
        now = time.time()
        with lock:
            dispatch.extend((t.timestamp(), now - t.timestamp()) for t in event.scheduled_run_times)

    def noop() -> None:
        now = time.time()
        with lock:
            starts.append(now)

    scheduler = BackgroundScheduler(
        timezone="UTC", job_defaults={"misfire_grace_time": None, "coalesce": False}
    )
    scheduler.add_listener(listener, EVENT_JOB_SUBMITTED)
    for i in range(jobs):
        scheduler.add_job(noop, CronTrigger(second="*", timezone="UTC"), id=f"anchor-{i}")
    cpu0 = time.process_time()
    began = time.time()
    scheduler.start()
    time.sleep(duration)
    scheduler.shutdown(wait=False)
    cpu = time.process_time() - cpu0
    measured_from = began + warmup
    lags = [lag * 1000 for at, lag in dispatch if at >= measured_from]
    start_lags = [(t - math.floor(t)) * 1000 for t in starts if t >= measured_from + 1]
    return {
        "jobs": jobs,
        "fires_per_second_scheduled": jobs,
        "seconds": duration,
        "fires_dispatched": len(dispatch),
        "dispatch_lag_ms": lag_summary(lags),
        "start_lag_ms": lag_summary(start_lags),
        "start_valid": bool(lags) and max(lags) < 900,
        "cpu_percent": round(cpu / duration * 100, 1),
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for res in results:
        series = res["lag_p99_per_second_ms"]
        ax.plot(
            list(series.keys()),
            list(series.values()),
            marker="o",
            ms=3,
            label=f"{res['schedules']} schedules"
            + (f", {res['notify_backlog']} notifications failing" if res.get("notify_backlog") else ""),
        )
        ax.axvline(res["kill_at_seconds"], color="grey", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("second of the run (dashed: SIGKILL of the leader)")
    ax.set_ylabel("publish lag p99 (ms, log)")
    ax.set_title("tickwork scheduler: 1,000 fires/s, leader + standby, SIGKILL mid-run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--duration", type=float, default=24.0)
    parser.add_argument("--kill-at", type=float, default=14.0)
    parser.add_argument("--e2e-schedules", type=int, default=200, help="0 skips the real-worker phase")
    parser.add_argument("--e2e-duration", type=float, default=15.0)
    parser.add_argument(
        "--anchor-seconds", type=float, default=20.0, help="APScheduler 3 anchor's length; 0 skips it"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scheduling.json"))
    parser.add_argument(
        "--late-after", type=int, default=None, help="lateAfterSeconds on every job (the alert sweep's cost)"
    )
    parser.add_argument(
        "--notify-backlog", type=int, default=0, help="notifications failing (500) throughout the run"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TICKWORK_NAME=VALUE",
        help="a setting for every tickwork process of the run (e.g. TICKWORK_PUBLISH_BATCH_SIZE=1000)",
    )
    add_queue_version_option(parser)
    args = parser.parse_args()
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("TICKWORK_"):
            parser.error(f"--set {item!r}: expected TICKWORK_NAME=VALUE")
        EXTRA_SETTINGS[name] = value
    with queue_version(r"^tw_(bench|e2e)_[0-9a-f]{6}\.", args.queue_version):
        run(args)


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    load_start = [round(x, 2) for x in os.getloadavg()]
    # Each phase (the anchor's too) starts on a quiet machine: purge caught up, CPU mostly idle.
    server = create_engine(MYSQL, isolation_level="AUTOCOMMIT")
    anchor = None
    if args.anchor_seconds:
        print(
            f"anchor: APScheduler 3, 1,000 cron jobs every second, {args.anchor_seconds:.0f} s ...",
            flush=True,
        )
        settled = settle_machine(server)
        anchor = {**run_apscheduler_anchor(1000, args.anchor_seconds), "conditions": settled}
        print(json.dumps(anchor, indent=2), flush=True)
    results = []
    for size in args.sizes:
        print(f"size {size}: running {args.duration:.0f} s ...", flush=True)
        settled = settle_machine(server)
        res = run_size(size, args.duration, args.kill_at, out.parent, args.notify_backlog, args.late_after)
        res["conditions"] = settled
        if anchor is not None:
            # The goal: tickwork's publish lag p99 at most half the in-process anchor's dispatch p99.
            res["publish_lag_p99_vs_apscheduler"] = round(
                res["publish_lag_ms"]["p99"] / anchor["dispatch_lag_ms"]["p99"], 3
            )
        brief = {k: v for k, v in res.items() if k != "lag_p99_per_second_ms"}
        print(json.dumps(brief, indent=2), flush=True)
        results.append(res)
    end_to_end = None
    if args.e2e_schedules:
        print(f"end to end: {args.e2e_schedules} schedules, real workers ...", flush=True)
        settled = settle_machine(server)
        end_to_end = run_end_to_end(args.e2e_schedules, args.e2e_duration, out.parent)
        end_to_end["conditions"] = settled
        print(json.dumps(end_to_end, indent=2), flush=True)
    meta = {
        "host_cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": os.uname().nodename,
        "cpu": cpu_model(),
        "loadavg_start": load_start,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "apscheduler_anchor": anchor,
        "settings": EXTRA_SETTINGS,
        "queue_version": args.queue_version or "broker default",
        "results": results,
        "end_to_end": end_to_end,
    }
    server.dispose()
    out.write_text(json.dumps(meta, indent=2))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
