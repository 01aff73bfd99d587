"""Worker throughput: tickwork's full path (run log on MariaDB, RabbitMQ) against bare Dramatiq.

Both run on the same RabbitMQ with the same worker shape (2 processes x 8 threads by default):
tickwork as ``python -m dramatiq tickwork.worker``, bare Dramatiq as ``python -m dramatiq
benchmarks.bare_dramatiq_jobs`` (Dramatiq's own broker and default middleware, no tickwork code;
``--bare-broker tickwork`` runs the bare actors inside tickwork's workers instead, as before
2026-12-03, where every tickwork middleware hook also runs for them and passes them through):

1. drain: N messages are loaded into a queue no worker consumes yet; then workers limited to
   that queue start, and the time from the first message taken to the queue being empty (and,
   for tickwork, every run SUCCESS in the database) gives jobs/s. Tickwork runs are created the
   way the scheduler creates them: a PENDING row per run, then the publish.
2. latency: at a fixed arrival rate, the time from the start of the enqueue (for tickwork: the
   row insert and the publish) to the actor starting, p50/p99.
3. peak RSS (VmHWM) of every worker process.

    PYTHONPATH=. .venv/bin/python benchmarks/worker_throughput.py --jobs 10000 --rounds 3

Writes benchmarks/results/worker_throughput.json and benchmarks/results/worker_throughput.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pika
import redis
from sqlalchemy import create_engine, func, select, text

from tickwork.config import Settings, load_settings
from tickwork.messaging import build_message, publish, queue_name
from tickwork.spec import JobSpec
from tickwork.store.engine import make_engine, upgrade
from tickwork.store.jobs import create_job
from tickwork.store.models import RunStatus, runs_table, utcnow
from tickwork.store.runs import insert_run, mark_enqueued

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.* when run as a script

from benchmarks.stats import cpu_idle_fraction, percentile, percentiles  # noqa: E402

MYSQL_HOST = "root@127.0.0.1:3306"
#: ``--driver`` → the SQLAlchemy URL scheme (the same code runs on either driver).
DRIVERS = {"pymysql": "mysql+pymysql", "mysqldb": "mysql+mysqldb"}
#: py-spy (the bench extra) beside this interpreter when the venv is not on PATH.
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def git_head(path: Path) -> str | None:
    """The commit checked out at ``path`` (None outside a git checkout)."""
    try:
        argv = ["git", "-C", str(path), "rev-parse", "HEAD"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def env_pair(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--also-env`` and ``--also-bare-env``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def checkout(text: str) -> str:
    """``--also-checkout``: a directory holding tickwork's code."""
    path = Path(text).resolve()
    if not (path / "tickwork" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r} holds no tickwork checkout (no tickwork/__init__.py)")
    return str(path)


def machine() -> dict[str, Any]:
    """Where and under what load the figures were taken (the machine is shared)."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": platform.node(),
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def service_pids() -> dict[str, list[int]]:
    """mariadbd and RabbitMQ's beam.smp: their CPU during a drain is part of the cost per job."""
    found: dict[str, list[int]] = {"mariadbd": [], "beam.smp": []}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm in found:
                found[comm].append(int(entry))
    return found


def services_cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    out = {}
    for name, plist in pids.items():
        total = 0.0
        for pid in plist:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        out[name] = total
    return out


def delete_queues(amqp_url: str, namespace: str, queues: tuple[str, ...] = ("default",)) -> None:
    """Delete a run's queues (with their delay and dead-letter queues): a run that ends with
    hundreds of thousands of unconsumed messages would otherwise leave them in RabbitMQ, slowing
    every later benchmark on the machine. Called from ``finally`` blocks: a failure is printed,
    not raised over the run's own error."""
    try:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            channel = conn.channel()
            for queue in (*queues, "dead-letter"):
                for tail in ("", ".DQ", ".XQ"):
                    channel.queue_delete(f"{namespace}.{queue}{tail}")
        finally:
            conn.close()
    except pika.exceptions.AMQPError as exc:
        print(f"could not delete the queues of {namespace}: {exc!r}", file=sys.stderr)


def delete_keys(redis_url: str, namespace: str) -> None:
    """Delete a run's Redis keys (``<namespace>:*``: the lease, heartbeats, ``workers:since``,
    which has no expiry): each run has a namespace of its own, so they would pile up. Called
    from ``finally`` blocks: a failure is printed, not raised over the run's own error."""
    try:
        client = redis.Redis.from_url(redis_url)
        try:
            for key in client.scan_iter(f"{namespace}:*"):
                client.delete(key)
        finally:
            client.close()
    except redis.RedisError as exc:
        print(f"could not delete the Redis keys of {namespace}: {exc!r}", file=sys.stderr)


@contextlib.contextmanager
def queue_version(pattern: str, version: int | None) -> Iterator[None]:
    """The run's queues (names matching ``pattern``) on classic queue storage ``version``, by a
    RabbitMQ policy set with ``rabbitmqctl`` for the run's length and cleared after it; a policy
    converts a queue in place, whenever it was declared. ``None`` leaves the broker's default
    (version 1 before RabbitMQ 4.0 unless ``classic_queue.default_version`` says otherwise;
    only version 2 from 4.0). A policy is the broker's configuration, not tickwork's: it shows
    what the operations guide's advice is worth on this broker."""
    if version is None:
        yield
        return
    if shutil.which("rabbitmqctl") is None:
        raise SystemExit("--queue-version needs rabbitmqctl on PATH (the broker's own tool)")
    name = f"tickwork-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["rabbitmqctl", "set_policy", "-p", "/", "--apply-to", "queues", name, pattern,
         json.dumps({"queue-version": version})],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield
    finally:
        cleared = subprocess.run(
            ["rabbitmqctl", "clear_policy", "-p", "/", name], check=False, capture_output=True
        )
        if cleared.returncode:
            print(f"could not clear the policy {name}: {cleared.stderr.decode()}", file=sys.stderr)


def add_queue_version_option(parser: argparse.ArgumentParser, queues: str = "the run's queues") -> None:
    """``--queue-version``, for :func:`queue_version`: the same option in every benchmark that
    publishes."""
    parser.add_argument(
        "--queue-version",
        type=int,
        choices=(1, 2),
        help=f"classic queue storage of {queues} (a RabbitMQ policy for the run; default: the broker's)",
    )


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env.update(
        PYTHONPATH=str(ROOT),
        TICKWORK_DATABASE_URL=settings.database_url,
        TICKWORK_BROKER_URL=settings.broker_url,
        TICKWORK_REDIS_URL=settings.redis_url or "",
        TICKWORK_NAMESPACE=settings.namespace,
        TICKWORK_LOG_LEVEL="WARNING",
        dramatiq_worker_timeout="100",
    )
    return env


def start_workers(
    settings: Settings,
    queues: list[str],
    processes: int,
    threads: int,
    log: Path,
    extra_env: dict[str, str] | None = None,
    *,
    plain: bool = False,
) -> Any:
    """Worker processes for ``queues``: tickwork's, or with ``plain`` bare Dramatiq's."""
    modules = (
        ["benchmarks.bare_dramatiq_jobs"]
        if plain
        else ["tickwork.worker", "benchmarks.worker_throughput_jobs"]
    )
    argv = [
        sys.executable, "-m", "dramatiq", *modules,
        "--processes", str(processes), "--threads", str(threads), "--queues", *queues,
    ]  # fmt: skip
    env = {**worker_env(settings), **(extra_env or {})}
    return subprocess.Popen(
        argv,
        env=env,
        # The code's checkout (another one with --also-checkout): ``-m`` puts the working
        # directory first on sys.path, ahead of the venv's editable install of this one.
        cwd=env["PYTHONPATH"],
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and int(entry) != pgid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    return sum(user_system_seconds(pid))


def user_system_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def workers_cpu(pids: list[int]) -> tuple[float, float]:
    """(all, of which system) CPU seconds of the worker processes ``pids`` so far."""
    times = [user_system_seconds(pid) for pid in pids]
    return sum(u + s for u, s in times), sum(s for _, s in times)


def stop_workers(proc: Any) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def queue_counts(channel: Any, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of ``queue``."""
    method = channel.queue_declare(queue=queue, durable=True, passive=True).method
    return int(method.message_count), int(method.consumer_count)


def ready_count(channel: Any, queue: str) -> int:
    return queue_counts(channel, queue)[0]


def wait_for_consumers(connection: Any, queue: str, processes: int, timeout: float = 60) -> float:
    """Seconds until ``processes`` consumers take from ``queue`` (which they may still have to
    declare: a passive declare of a missing queue closes its channel, hence one per look)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        channel = connection.channel()
        try:
            consumers = int(channel.queue_declare(queue=queue, passive=True).method.consumer_count)
        except pika.exceptions.ChannelClosedByBroker:
            consumers = 0
        else:
            channel.close()
        if consumers >= processes:
            return round(time.monotonic() - start, 3)
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {processes} worker processes consume {queue} after {timeout} s")


def history_list_length(server: Any) -> int:
    """InnoDB's undo records not yet purged: the drains before leave a backlog that MariaDB works
    off in the background, on the same two cores."""
    with server.connect() as c:
        return int(c.execute(text("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")).one()[1])


def settle_purge(server: Any, below: int = 1000, timeout: float = 120) -> dict[str, Any]:
    """Wait (bounded) until MariaDB's purge has caught up with the drains: the latency phase
    measures a machine doing only that, not one still cleaning up after the last phase."""
    start = time.monotonic()
    first = history_list_length(server)
    length = first
    while length >= below and time.monotonic() - start < timeout:
        time.sleep(0.5)
        length = history_list_length(server)
    return {"history_list_before": first, "history_list_at_start": length,
            "waited_s": round(time.monotonic() - start, 1)}  # fmt: skip


def settle_machine(server: Any, idle_at_least: float = 0.8, timeout: float = 60) -> dict[str, Any]:
    """Wait (bounded) until MariaDB's purge has caught up and the CPU is mostly idle for a second:
    a phase run right after another (a scale-out's processes exiting, their queues deleted, their
    rows purged) otherwise measures the last one's clean-up too. What it found is recorded."""
    conditions = settle_purge(server, timeout=timeout)
    start = time.monotonic()
    idle = cpu_idle_fraction()
    while idle < idle_at_least and time.monotonic() - start < timeout:
        idle = cpu_idle_fraction()
    conditions["cpu_idle_at_start"] = round(idle, 3)
    conditions["waited_for_idle_s"] = round(time.monotonic() - start, 1)
    return conditions


def drain(
    settings: Settings,
    channel: Any,
    queue: str,
    n: int,
    args: argparse.Namespace,
    log: Path,
    extra: Any = None,
    profile: Path | None = None,
    gil: bool = False,
    extra_env: dict[str, str] | None = None,
    starter: Any = None,
) -> dict[str, Any]:
    # Messages sent without publisher confirms (the bare anchor's) may still be on their way into
    # the queue: the clock starts only once all N are there and a worker has taken one.
    deadline = time.monotonic() + 60
    while ready_count(channel, queue) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{queue} holds {ready_count(channel, queue)} of {n} messages")
        time.sleep(0.01)
    spawned = time.monotonic()
    proc = (
        starter()
        if starter
        else start_workers(settings, [queue], args.processes, args.threads, log, extra_env)
    )
    try:
        deadline = time.monotonic() + 60
        while ready_count(channel, queue) >= n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start consuming {queue}; see {log}")
            time.sleep(0.01)
        first_take = time.monotonic()
        # The clock starts once every worker process consumes: a process still importing its
        # code while the first drains measures start-up, not the worker path (tickwork's
        # processes start 1.2-1.6 s after the spawn, up to 0.5 s apart; bare Dramatiq's 0.3 s).
        # Only the messages still queued then are counted.
        while True:
            left, consumers = queue_counts(channel, queue)
            if consumers >= args.processes or left == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{consumers} of {args.processes} worker processes consume {queue}")
            time.sleep(0.005)
        # Drained before the last process came up (a small N): the old clock, every job (the
        # CPU read below then misses what was spent since the first take).
        t0, counted = (time.monotonic(), left) if left else (first_take, n)
        pids = group_pids(proc.pid)
        cpu0, sys0 = workers_cpu(pids)
        services = service_pids()
        svc0 = services_cpu(services)
        spies = []
        if profile is not None:
            # py-spy on every worker process for the drain (SIGINT at the end writes the stacks).
            for pid in pids:
                out = profile.with_name(f"{profile.stem}.{pid}.txt")
                spies.append(
                    subprocess.Popen(
                        [PY_SPY, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                         "--nonblocking", "--threads", *(["--gil"] if gil else []), "-o", str(out)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
                )  # fmt: skip
        while ready_count(channel, queue) > 0:
            if time.monotonic() > deadline + 120:
                raise RuntimeError(f"{queue} did not drain; see {log}")
            time.sleep(0.01)
        t1 = time.monotonic()
        if extra is not None:
            t1 = extra(t0, t1)
        rss = {pid: round(peak_rss_mb(pid), 1) for pid in pids}
        cpu1, sys1 = workers_cpu(pids)
        cpu, system = cpu1 - cpu0, sys1 - sys0
        svc1 = services_cpu(services)
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(30)
    finally:
        stop_workers(proc)
    seconds = t1 - t0
    return {
        "jobs": n,
        "jobs_counted": counted,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(counted / seconds, 1),
        # The definition before 2026-12-03 17:00 UTC: every job, from the first message taken.
        "jobs_per_s_from_first_take": round(n / (t1 - first_take), 1),
        "start_seconds": {
            "first_take": round(first_take - spawned, 3),
            "all_consuming": round(t0 - spawned, 3),
        },
        "worker_cpu_ms_per_job": round(cpu * 1000 / counted, 3),
        # Of which in the kernel (system calls: sockets, futex wake-ups of other threads).
        "worker_system_cpu_ms_per_job": round(system * 1000 / counted, 3),
        "worker_cpu_utilisation": round(cpu / seconds, 2),
        # Everything on the machine runs these services (other users' tests too): indicative.
        "service_cpu_ms_per_job": {k: round((svc1[k] - svc0[k]) * 1000 / counted, 3) for k in svc0},
        "peak_rss_mb": rss,
    }


class CeleryAnchor:
    """Celery with a run history in MySQL, drained like the others (``benchmarks/celery_app.py``)."""

    def __init__(self, settings: Settings, log: Path, args: argparse.Namespace) -> None:
        self.n = args.celery_jobs
        self.log = log
        self.queue = f"{settings.namespace}.celery"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")},
            "PYTHONPATH": str(ROOT),
            "BENCH_CELERY_BROKER": settings.broker_url.replace("%2F", "/"),
            "BENCH_CELERY_BACKEND": "db+" + settings.database_url.replace("mysqldb", "pymysql"),
            "BENCH_CELERY_QUEUE": self.queue,
        }
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("BENCH_CELERY_")})
        from benchmarks import celery_app

        self.app = celery_app.app
        self.task = celery_app.noop
        self.engine = create_engine(settings.database_url)

    def _start(self) -> Any:
        argv = [
            sys.executable, "-m", "celery", "-A", "benchmarks.celery_app", "worker", "-P", "prefork",
            "-c", "2", "-Q", self.queue, "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        return subprocess.Popen(
            argv, env=self.env, cwd=ROOT, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def _succeeded(self) -> int:
        with self.engine.connect() as c:
            try:
                return int(c.scalar(text("SELECT COUNT(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")))
            except Exception:
                return 0  # the backend creates its table with the first result

    def drain(self, channel: Any) -> dict[str, Any]:
        with self.engine.begin() as c, contextlib.suppress(Exception):
            c.execute(text("DELETE FROM celery_taskmeta"))
        with self.app.producer_or_acquire() as producer:
            for _ in range(self.n):
                self.task.apply_async(producer=producer)

        def done(t0: float, t1: float) -> float:
            while self._succeeded() < self.n:
                if time.monotonic() - t1 > 300:
                    raise RuntimeError(f"only {self._succeeded()} of {self.n} Celery tasks succeeded")
                time.sleep(0.05)
            return time.monotonic()

        args = argparse.Namespace(processes=1, threads=2)
        return drain(None, channel, self.queue, self.n, args, self.log, done, starter=self._start)  # type: ignore[arg-type]


def latency_path(engine: Any, rds: Any, start_key: str, job_id: int, count: int) -> dict[str, Any]:
    """Where each latency-phase run spent its time, from its row and its start: the insert (to
    the row's commit), to the claim (the publish, the delivery and the wait for the worker's
    group: its ``started_at`` is stamped as the claim's statement is sent) and from the claim to
    the start (the claim's commit and the hand-over to the actor), the last two together being
    the time after the insert. Also each part's mean over the runs slower than the whole path's
    p99: which part the tail is made of."""
    seen: dict[int, tuple[float, float, float]] = {}
    for raw in rds.lrange(start_key, 0, -1):
        run_id, sent, committed, now = (raw.decode() if isinstance(raw, bytes) else raw).split()
        seen[int(run_id)] = (float(sent), float(committed), float(now))
    with engine.connect() as c:
        rows = c.execute(
            select(runs_table.c.id, runs_table.c.started_at).where(
                runs_table.c.job_id == job_id, runs_table.c.attempt <= count
            )
        ).all()
    parts: list[tuple[float, ...]] = []  # in the order of ``names``
    for run_id, started_at in rows:
        if run_id not in seen or started_at is None:
            continue
        sent_at, committed_at, start = seen[run_id]
        claim_at = started_at.replace(tzinfo=UTC).timestamp()
        spans = (
            start - sent_at,
            committed_at - sent_at,
            start - committed_at,
            claim_at - committed_at,
            start - claim_at,
        )
        parts.append(tuple(round(v * 1000, 3) for v in spans))
    if len(parts) < 100:
        return {"runs": len(parts)}
    names = ("total", "insert", "after_insert", "to_claim", "claim_to_start")
    out: dict[str, Any] = {"runs": len(parts)}
    for i, name in enumerate(names):
        p50, p99 = percentiles((p[i] for p in parts), 0.5, 0.99)
        out[f"{name}_p50"], out[f"{name}_p99"] = round(p50, 2), round(p99, 2)
    cut = percentile((p[0] for p in parts), 0.99)
    tail = [p for p in parts if p[0] >= cut]
    out["tail_runs"] = len(tail)
    out["tail_mean"] = {name: round(statistics.fmean(p[i] for p in tail), 2) for i, name in enumerate(names)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating drains of each kind")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rate", type=float, default=200.0, help="arrivals/s in the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--warmup-seconds", type=float, default=1.0, help="latency phase: first seconds not counted"
    )
    parser.add_argument(
        "--also-sync",
        action="store_true",
        help="a third drain per round: successes recorded before the worker thread goes on",
    )
    parser.add_argument(
        "--also-mysqlclient",
        action="store_true",
        help="a tickwork drain per round on mysqlclient (mysql+mysqldb://), the same code (needs the extra)",
    )
    parser.add_argument(
        "--scale-out", action="store_true", help="only the drain, at each processes x threads point"
    )
    parser.add_argument("--scale-processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--scale-threads", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument(
        "--with-celery",
        action="store_true",
        help="a Celery drain per round (prefork -c 2, SQLAlchemy backend on MariaDB; the bench extra)",
    )
    parser.add_argument(
        "--job-output",
        choices=["none", "distinct"],
        default="none",
        help="what each no-op job returns: None, or a value of its own (as real jobs do: each"
        " success then records a different output)",
    )
    parser.add_argument(
        "--also-env",
        metavar="KEY=VALUE",
        type=env_pair,
        action="append",
        default=[],
        help="a tickwork drain per round with these worker environment variables (repeatable)",
    )
    parser.add_argument(
        "--also-checkout",
        metavar="DIR",
        type=checkout,
        help="a tickwork drain per round whose workers run the code of another checkout (e.g. a"
        " git worktree of an earlier commit): a change against its parent, pair by pair",
    )
    parser.add_argument(
        "--also-bare-env",
        metavar="KEY=VALUE",
        type=env_pair,
        action="append",
        default=[],
        help="a bare Dramatiq drain per round with these worker environment variables (repeatable):"
        " is a setting's gain tickwork's own, or Dramatiq's too?",
    )
    parser.add_argument("--celery-jobs", type=int, default=2000, help="tasks per Celery drain")
    parser.add_argument("--skip-latency", action="store_true", help="only the drain")
    parser.add_argument(
        "--bare-broker",
        choices=["plain", "tickwork"],
        default="plain",
        help="bare Dramatiq on its own broker (plain) or inside tickwork's workers (the old anchor)",
    )
    parser.add_argument("--driver", choices=sorted(DRIVERS), default="pymysql", help="MySQL driver")
    add_queue_version_option(parser, "every queue of the run, tickwork's and bare Dramatiq's")
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="py-spy the first tickwork and bare drains (PREFIX.<pid>.txt, PREFIX-bare.<pid>.txt)",
    )
    parser.add_argument(
        "--profile-gil", action="store_true", help="sample only the thread holding the GIL (Python CPU)"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "worker_throughput.json"))
    args = parser.parse_args()
    os.environ["BENCH_JOB_OUTPUT"] = args.job_output  # read by the jobs in the worker processes
    mysql = f"{DRIVERS[args.driver]}://{MYSQL_HOST}"

    run = uuid.uuid4().hex[:8]
    dbname = f"tickwork_bench_{run}"
    server = create_engine(mysql, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{dbname}` CHARACTER SET utf8mb4"))
    settings = load_settings(
        database_url=f"{mysql}/{dbname}",
        broker_url="amqp://guest:guest@127.0.0.1:5672/%2F",
        redis_url="redis://127.0.0.1:6379/0",
        namespace=f"twbench_{run}",
    )
    log = Path(args.out).with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    os.environ.update({k: v for k, v in worker_env(settings).items() if k.startswith("TICKWORK_")})
    upgrade(settings)
    engine = make_engine(settings)
    from tickwork.worker import setup_broker

    broker = setup_broker(settings, engine=engine)
    import benchmarks.worker_throughput_jobs as jobs_module

    conn = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    channel = conn.channel()
    rds = redis.Redis.from_url(settings.redis_url or "")
    results: dict[str, Any] = {
        "machine": machine(),
        "commit": git_head(ROOT),
        "driver": args.driver,
        "queue_version": args.queue_version or "broker default",
        "jobs": args.jobs,
        "processes": args.processes,
        "threads": args.threads,
        "job_output": args.job_output,
        "bare_anchor": "Dramatiq's own broker and default middleware (benchmarks/bare_dramatiq_jobs.py)"
        if args.bare_broker == "plain"
        else "bare actors inside tickwork's worker processes",
    }
    policy = contextlib.ExitStack()
    try:
        policy.enter_context(queue_version(f"^{re.escape(settings.namespace)}\\.", args.queue_version))
        noop_job = create_job(
            engine,
            JobSpec(name="bench-noop-api", handler_type="python", handler_data="bench_noop", queue="bench"),
        )  # type: ignore[arg-type]
        lat_job = create_job(
            engine,
            JobSpec(
                name="bench-lat-api", handler_type="python", handler_data="bench_latency", queue="benchlat"
            ),
        )  # type: ignore[arg-type]

        # --- drain, alternating tickwork and bare Dramatiq for --rounds rounds (medians reported:
        # a single drain of a few seconds on a 2-core machine varies by 2x from run to run)
        tw_queue = queue_name(settings, "bench")
        broker.declare_queue(tw_queue)
        bare_queue = f"{settings.namespace}.bare"
        rounds: list[dict[str, Any]] = []
        kinds = [
            "tickwork",
            *(["tickwork_sync"] if args.also_sync else []),
            *(["tickwork_mysqldb"] if args.also_mysqlclient else []),
            *(["tickwork_env"] if args.also_env else []),
            *(["tickwork_checkout"] if args.also_checkout else []),
        ]
        # The same workers and code, another MySQL driver: only the URL's scheme differs.
        mysqldb_url = settings.database_url.replace(DRIVERS[args.driver], DRIVERS["mysqldb"], 1)
        kind_env = {
            "tickwork": None,
            "tickwork_sync": {"BENCH_SYNC_SUCCESS": "1"},
            "tickwork_mysqldb": {"TICKWORK_DATABASE_URL": mysqldb_url},
            "tickwork_env": dict(args.also_env),
            "tickwork_checkout": {"PYTHONPATH": args.also_checkout or str(ROOT)},
        }

        def load_tickwork() -> tuple[Any, float]:
            """N PENDING rows and their messages, published the way the ticker does."""
            now = utcnow()
            t = time.monotonic()
            with engine.begin() as c:
                c.execute(
                    runs_table.insert(),
                    [
                        {"job_id": noop_job.id, "scheduled_for": now, "attempt": i + 1, "status": "PENDING",
                         "trigger": "schedule", "available_at": now, "created_at": now, "updated_at": now}
                        for i in range(args.jobs)
                    ],
                )  # fmt: skip
                ids = [
                    r.id
                    for r in c.execute(
                        select(runs_table.c.id).where(
                            runs_table.c.job_id == noop_job.id, runs_table.c.scheduled_for == now
                        )
                    )
                ]
            messages = [
                build_message(settings, noop_job, run_id=run_id, attempt=i + 1, scheduled_for=now)
                for i, run_id in enumerate(ids)
            ]
            for start in range(0, len(messages), 500):
                publish(broker, messages[start : start + 500])
            mark_enqueued(engine, ids)
            return now, round(time.monotonic() - t, 2)

        def done_waiter(now: Any) -> Any:
            def tickwork_done(t0: float, t1: float) -> float:
                # The drain ends when every run is SUCCESS in the database, not at the last ack.
                while True:
                    with engine.connect() as c:
                        done = c.scalar(
                            select(func.count()).where(
                                runs_table.c.job_id == noop_job.id,
                                runs_table.c.scheduled_for == now,
                                runs_table.c.status == RunStatus.SUCCESS.value,
                            )
                        )
                    if done >= args.jobs:
                        return time.monotonic()
                    if time.monotonic() - t1 > 60:
                        raise RuntimeError(f"only {done} of {args.jobs} tickwork runs finished")
                    time.sleep(0.01)

            return tickwork_done

        def bare_starter(drain_args: argparse.Namespace, env: dict[str, str] | None = None) -> Any:
            """Bare Dramatiq's workers for a drain (see the module docstring)."""
            plain = drain_args.bare_broker == "plain"
            return lambda: start_workers(
                settings, [bare_queue], drain_args.processes, drain_args.threads, log, env, plain=plain
            )

        bare_kinds = ["bare", *(["bare_env"] if args.also_bare_env else [])]
        bare_env = {"bare": None, "bare_env": dict(args.also_bare_env)}

        if args.scale_out:
            # Workers scaling out: the same drain with 1, 2 and 4 processes at several thread
            # counts, tickwork and bare Dramatiq alternating at each point.
            points = []
            for processes in args.scale_processes:
                for threads in args.scale_threads:
                    point_args = argparse.Namespace(
                        **{**vars(args), "processes": processes, "threads": threads}
                    )
                    now, _ = load_tickwork()
                    tw = drain(settings, channel, tw_queue, args.jobs, point_args, log, done_waiter(now))
                    for _ in range(args.jobs):
                        jobs_module.bare_noop.send()
                    bare = drain(
                        settings,
                        channel,
                        bare_queue,
                        args.jobs,
                        point_args,
                        log,
                        starter=bare_starter(point_args),
                    )
                    points.append({"processes": processes, "threads": threads, "tickwork": tw, "bare": bare})
                    print(
                        f"{processes}x{threads}: tickwork {tw['jobs_per_s']}/s, bare {bare['jobs_per_s']}/s"
                        f" (load {os.getloadavg()[0]:.2f})",
                        flush=True,
                    )
            results["scale_out"] = points
            return finish(results, args, None)

        celery = None
        if args.with_celery:
            celery = CeleryAnchor(settings, log, args)
        for round_no in range(args.rounds):
            row: dict[str, Any] = {}
            # With a variant, the order alternates from round to round: the second tickwork drain
            # of a round was the faster more often (worker_profile.txt, section 12).
            order = kinds if round_no % 2 == 0 else [*kinds[1:], kinds[0]]
            row["order"] = list(order)
            for kind in order:
                now, load_seconds = load_tickwork()
                tickwork_done = done_waiter(now)
                profile = (
                    Path(args.profile) if args.profile and round_no == 0 and kind == "tickwork" else None
                )
                row[kind] = drain(
                    settings, channel, tw_queue, args.jobs, args, log, tickwork_done, profile,
                    args.profile_gil, kind_env[kind],
                )  # fmt: skip
                row[kind]["load_seconds"] = load_seconds
            for kind in bare_kinds if round_no % 2 == 0 else bare_kinds[::-1]:
                row["order"].append(kind)
                for _ in range(args.jobs):
                    jobs_module.bare_noop.send()
                bare_profile = (
                    Path(args.profile).with_name(f"{Path(args.profile).stem}-bare")
                    if args.profile and round_no == 0 and kind == "bare"
                    else None
                )
                row[kind] = drain(
                    settings, channel, bare_queue, args.jobs, args, log, profile=bare_profile,
                    gil=args.profile_gil, starter=bare_starter(args, bare_env[kind]),
                )  # fmt: skip
            if celery is not None:
                row["celery"] = celery.drain(channel)
                row["ratio_vs_celery"] = round(row["tickwork"]["jobs_per_s"] / row["celery"]["jobs_per_s"], 3)
            for kind in kinds:
                suffix = kind.removeprefix("tickwork")
                row[f"ratio{suffix}"] = round(row[kind]["jobs_per_s"] / row["bare"]["jobs_per_s"], 3)
            rounds.append(row)
            print(
                f"round {round_no + 1}: "
                + ", ".join(f"{k} {row[k]['jobs_per_s']}/s" for k in row["order"])
                + (f", celery {row['celery']['jobs_per_s']}/s" if "celery" in row else "")
                + f" (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
        results["rounds"] = rounds
        for kind in [*kinds, *bare_kinds]:
            results[kind] = {
                "jobs_per_s_median": statistics.median(r[kind]["jobs_per_s"] for r in rounds),
                "jobs_per_s_from_first_take_median": statistics.median(
                    r[kind]["jobs_per_s_from_first_take"] for r in rounds
                ),
                "start_seconds_median": statistics.median(
                    r[kind]["start_seconds"]["all_consuming"] for r in rounds
                ),
                "worker_cpu_ms_per_job_median": statistics.median(
                    r[kind]["worker_cpu_ms_per_job"] for r in rounds
                ),
                "peak_rss_mb": rounds[-1][kind]["peak_rss_mb"],
            }
        results["ratio"] = round(
            results["tickwork"]["jobs_per_s_median"] / results["bare"]["jobs_per_s_median"], 3
        )
        results["ratio_per_round"] = [r["ratio"] for r in rounds]
        results["ratio_from_first_take"] = round(
            results["tickwork"]["jobs_per_s_from_first_take_median"]
            / results["bare"]["jobs_per_s_from_first_take_median"],
            3,
        )
        if celery is not None:
            results["celery"] = {
                "config": "Celery 5, prefork -c 2, SQLAlchemy result backend on MariaDB, "
                "task_track_started, acks_late, RabbitMQ",
                "jobs_per_s_median": statistics.median(r["celery"]["jobs_per_s"] for r in rounds),
                "worker_cpu_ms_per_job_median": statistics.median(
                    r["celery"]["worker_cpu_ms_per_job"] for r in rounds
                ),
            }
            results["ratio_vs_celery"] = round(
                results["tickwork"]["jobs_per_s_median"] / results["celery"]["jobs_per_s_median"], 3
            )
        for kind in kinds[1:]:
            suffix = kind.removeprefix("tickwork")
            results[f"ratio{suffix}"] = round(
                results[kind]["jobs_per_s_median"] / results["bare"]["jobs_per_s_median"], 3
            )
            results[f"ratio{suffix}_per_round"] = [r[f"ratio{suffix}"] for r in rounds]
            results[f"pairs{suffix}"] = paired(rounds, kind)
        if args.also_env:
            results["env_settings"] = kind_env["tickwork_env"]
        if args.also_checkout:
            results["checkout"] = {"path": args.also_checkout, "commit": git_head(Path(args.also_checkout))}
        if args.also_bare_env:
            results["bare_env_settings"] = bare_env["bare_env"]
            results["pairs_bare_env"] = paired(rounds, "bare_env", base="bare")
            # Both kinds with the setting: what the ratio would be were Dramatiq tuned alike.
            if args.also_env:
                results["ratio_env_vs_bare_env"] = round(
                    results["tickwork_env"]["jobs_per_s_median"] / results["bare_env"]["jobs_per_s_median"], 3
                )
        print("drain medians:", results["tickwork"], results["bare"], "ratio", results["ratio"], flush=True)

        # --- latency at a fixed arrival rate, each kind on its own workers (as in the drain)
        if args.skip_latency:
            return finish(results, args, None)
        count = int(args.rate * args.latency_seconds)
        for kind in ("tickwork", "bare"):
            proc = start_workers(
                settings,
                [f"{settings.namespace}.{'benchlat' if kind == 'tickwork' else 'barelat'}"],
                args.processes,
                args.threads,
                log,
                plain=kind == "bare" and args.bare_broker == "plain",
            )
            try:
                boot_s = wait_for_consumers(
                    conn, f"{settings.namespace}.{'benchlat' if kind == 'tickwork' else 'barelat'}",
                    args.processes,
                )  # fmt: skip
                conditions: dict[str, Any] = {"workers_consuming_after_s": boot_s, **settle_purge(server)}
                key = f"{jobs_module.LATENCY_KEY}:{kind}"

                def send_at_rate(
                    n: int, first_attempt: int, kind: str = kind, key: str = key
                ) -> dict[str, list[float]]:
                    """``n`` messages at ``args.rate`` per second; for tickwork, the enqueuing
                    side's parts: the row's insert (a commit) and the publish (the rest is
                    delivery, the claim and the start)."""
                    parts: dict[str, list[float]] = {"insert": [], "publish": []}
                    start = time.monotonic()
                    for i in range(n):
                        target = start + i / args.rate
                        delay = target - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        sent_at = time.time()
                        if kind == "tickwork":
                            fire = utcnow()
                            attempt = first_attempt + i
                            t_insert = time.perf_counter()
                            rid = insert_run(
                                engine, job_id=lat_job.id, scheduled_for=fire, attempt=attempt, now=fire
                            )
                            t_publish = time.perf_counter()
                            broker.enqueue(
                                build_message(
                                    settings, lat_job, run_id=rid, attempt=attempt, scheduled_for=fire,
                                    arguments={"args": [sent_at, time.time()]},
                                )
                            )  # fmt: skip
                            parts["insert"].append((t_publish - t_insert) * 1000)
                            parts["publish"].append((time.perf_counter() - t_publish) * 1000)
                        else:
                            jobs_module.bare_latency.send(sent_at)
                    deadline = time.monotonic() + 60
                    while rds.llen(key) < n and time.monotonic() < deadline:
                        time.sleep(0.1)
                    return parts

                # Warm-up, not counted: a worker's first messages open its connections (the
                # committer's to MySQL), which a steady 200 jobs/s does not measure.
                warm = int(args.rate * args.warmup_seconds)
                if warm:
                    send_at_rate(warm, first_attempt=count + 1)
                    warm_values = [float(v) * 1000 for v in rds.lrange(key, 0, -1)]
                    conditions["warmup"] = {
                        "messages": warm,
                        "max_ms": round(max(warm_values), 2) if warm_values else None,
                    }
                    rds.delete(key, f"{key}:start")
                parts = send_at_rate(count, first_attempt=1)
                values = sorted(float(v) * 1000 for v in rds.lrange(key, 0, -1))
                p50, p99 = percentiles(values, 0.5, 0.99)
                results[f"{kind}_latency_ms"] = {
                    "rate_per_s": args.rate,
                    "samples": len(values),
                    "p50": round(p50, 2),
                    "p99": round(p99, 2),
                    "max": round(values[-1], 2),
                    "conditions": conditions,
                }
                if kind == "tickwork":
                    for part, samples in parts.items():
                        p50, p99 = percentiles(samples, 0.5, 0.99)
                        results["tickwork_latency_ms"][f"{part}_p50"] = round(p50, 2)
                        results["tickwork_latency_ms"][f"{part}_p99"] = round(p99, 2)
                    path = latency_path(engine, rds, f"{key}:start", lat_job.id, count)
                    results["tickwork_latency_ms"]["path"] = path
                    # From the row's commit to the start (the publish, the delivery, the claim), also
                    # at the top level, where README's figures read it in older results too.
                    results["tickwork_latency_ms"].update(
                        {k: path[k] for k in ("after_insert_p50", "after_insert_p99") if k in path}
                    )
                results[f"_{kind}_latency_values"] = values
                print(f"{kind} latency:", results[f"{kind}_latency_ms"], flush=True)
                if kind == "tickwork":
                    results["latency_workers_peak_rss_mb"] = {
                        pid: round(peak_rss_mb(pid), 1) for pid in group_pids(proc.pid)
                    }
            finally:
                stop_workers(proc)
    finally:
        policy.close()
        conn.close()
        broker.close()
        queues = ("bench", "bare", "benchlat", "barelat", "default", "celery")
        delete_queues(settings.broker_url, settings.namespace, queues)
        delete_keys(settings.redis_url or "", settings.namespace)  # the URL ``rds`` was made from
        engine.dispose()
        with server.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS `{dbname}`"))

    latency_values = {k: results.pop(f"_{k}_latency_values") for k in ("tickwork", "bare")}
    return finish(results, args, latency_values)


def paired(rounds: list[dict[str, Any]], variant: str, base: str = "tickwork") -> dict[str, Any]:
    """A variant against its kind's defaults, drain by drain in the same round: one drain here
    varies by ~30 % from the next, so only the pairs (how many faster, the median of their
    ratios) say whether a change helps, not the ratio of two medians."""
    ratios = [r[variant]["jobs_per_s"] / r[base]["jobs_per_s"] for r in rounds]
    cpu = [r[variant]["worker_cpu_ms_per_job"] / r[base]["worker_cpu_ms_per_job"] for r in rounds]
    mariadb = [
        r[variant]["service_cpu_ms_per_job"]["mariadbd"] / r[base]["service_cpu_ms_per_job"]["mariadbd"]
        for r in rounds
        if base != "bare" and r[base]["service_cpu_ms_per_job"].get("mariadbd")
    ]
    return {
        "pairs": len(ratios),
        "variant_faster": sum(ratio > 1 for ratio in ratios),
        "jobs_per_s_ratio_per_pair": [round(ratio, 3) for ratio in ratios],
        "jobs_per_s_ratio_median": round(statistics.median(ratios), 3),
        "jobs_per_s_ratio_mean": round(statistics.fmean(ratios), 3),
        "worker_cpu_ratio_median": round(statistics.median(cpu), 3),
        "mariadb_cpu_ratio_median": round(statistics.median(mariadb), 3) if mariadb else None,
    }


def finish(results: dict[str, Any], args: argparse.Namespace, values: dict[str, list[float]] | None) -> int:
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2))
    if values is not None:
        plot(results, values, out.with_suffix(".png"))
    if "scale_out" in results:
        plot_scale_out(results, out.with_suffix(".png"))
    print(json.dumps(results, indent=2))
    return 0


def plot(results: dict[str, Any], latencies: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    kinds = ["bare", "tickwork"]
    rates = [results[k]["jobs_per_s_median"] for k in kinds]
    ax1.bar(["bare Dramatiq", "tickwork (run log)"], rates, color=["#888", "#2a7"])
    for i, r in enumerate(rates):
        ax1.text(i, r, f"{r:.0f}/s", ha="center", va="bottom")
    ax1.set_ylabel(f"jobs/s (drain, median of {len(results['rounds'])} rounds)")
    ax1.set_title(
        f"{results['jobs']} no-op jobs, {results['processes']}x{results['threads']} workers; "
        f"ratio {results['ratio']}"
    )
    for kind, color in zip(kinds, ["#888", "#2a7"], strict=True):
        vals = latencies[kind]
        ax2.plot(vals, [i / len(vals) for i in range(len(vals))], label=kind, color=color)
    ax2.set_xscale("log")
    # Ticks at 1-2-5 steps in plain numbers: the default labels every minor tick of a short
    # log range in 10^x notation, and they overlap.
    ax2.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax2.xaxis.set_minor_formatter(NullFormatter())
    ax2.set_xlabel("enqueue-to-start latency (ms)")
    ax2.set_ylabel("CDF")
    ax2.set_title(f"latency at {results['tickwork_latency_ms']['rate_per_s']:.0f} jobs/s")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_scale_out(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    points = results["scale_out"]
    threads = sorted({p["threads"] for p in points})
    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"]
    for kind, style in (("tickwork", "-"), ("bare", "--")):
        for t, color in zip(threads, colors, strict=False):
            series = sorted((p["processes"], p[kind]["jobs_per_s"]) for p in points if p["threads"] == t)
            ax.plot(
                [x for x, _ in series], [y for _, y in series], style, marker="o", color=color,
                label=f"{'bare Dramatiq' if kind == 'bare' else 'tickwork'}, {t} threads",
            )  # fmt: skip
    ax.set_xticks(sorted({p["processes"] for p in points}))
    ax.set_xlabel("worker processes (2 cores; MariaDB and RabbitMQ on the same cores)")
    ax.set_ylabel("drain rate (jobs/s)")
    machine = results["machine"]
    ax.set_title(
        f"{results['jobs']} no-op jobs per drain, {machine['date']}, "
        f"load {machine['loadavg_start'][0]}-{machine['loadavg_end'][0]}"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
