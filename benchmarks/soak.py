"""Soak: a cluster firing 200 times a second for minutes while something breaks every 30 s.

1,000 schedules (every 5 s, spread over the 5 seconds: 200 fires/s) run on 2 ``tickwork
scheduler`` and 2 ``tickwork worker`` processes against private MariaDB, Redis and RabbitMQ
servers (tests/private_services.py: the machine's shared servers are never touched). Every
``--fault-every`` seconds one fault, in turn: SIGKILL the leading scheduler, restart RabbitMQ
(stop_app/start_app), SIGKILL a worker, restart Redis (empty), SIGKILL and restart MariaDB.
A killed process is started again a second later, as a supervisor would.

Reported (results/soak.json, results/soak.png): fires expected / recorded / executed, lost,
duplicated (an attempt executed twice, or two rows for one fire), fires executed again as a
later attempt after a worker was killed mid-job, lag p50/p99/max per minute, the recovery time
of every fault (from the service being back, or from the kill, to the first second from which
every fire starts within 1 s for 3 s running), RSS, open file descriptors and CPU of every
process at start and end.

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py --minutes 10
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
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import select

from benchmarks.stats import percentile
from tests.private_services import PrivateMariaDB, PrivateRabbitMQ, PrivateRedis
from tickwork.config import Settings, load_settings
from tickwork.keys import leader_key
from tickwork.spec import JobSpec
from tickwork.store.engine import make_engine
from tickwork.store.jobs import create_job
from tickwork.store.models import runs_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FAULTS = ["kill-leader", "restart-rabbitmq", "kill-worker", "restart-redis", "restart-mariadb"]
ENV = {
    "TICKWORK_LOG_LEVEL": "WARNING",
    "TICKWORK_OUTBOX_GRACE_SECONDS": "10",
    "TICKWORK_IMPORTS": "benchmarks.soak_jobs",
}


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env.update(ENV)
    env.update(
        PYTHONPATH=str(ROOT),
        TICKWORK_DATABASE_URL=settings.database_url,
        TICKWORK_BROKER_URL=settings.broker_url,
        TICKWORK_REDIS_URL=settings.redis_url or "",
        TICKWORK_NAMESPACE=settings.namespace,
        TICKWORK_AUTH_SECRET="tickwork-soak-secret-0123456789abcdef",
    )
    return env


class Cluster:
    def __init__(self, settings: Settings, workdir: Path, threads: int) -> None:
        self.settings = settings
        self.workdir = workdir
        self.threads = threads
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: Counter[str] = Counter()

    def start(self, name: str) -> None:
        if name.startswith("scheduler"):
            args = ["scheduler", "--node-id", name]
        else:
            args = ["worker", "--processes", "1", "--threads", str(self.threads)]
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tickwork", *args],
            env=env_for(self.settings),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(10)
        self.restarts[name] += 1

    def pids(self) -> dict[str, list[int]]:
        return {name: group_pids(p.pid) for name, p in self.procs.items() if p.poll() is None}

    def stop(self, names: list[str]) -> dict[str, int]:
        for name in names:
            if self.procs[name].poll() is None:
                self.procs[name].send_signal(signal.SIGTERM)
        codes = {}
        for name in names:
            try:
                codes[name] = self.procs[name].wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.procs[name].pid, signal.SIGKILL)
                codes[name] = -9
        return codes


def group_pids(pgid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def proc_sample(pid: int) -> dict[str, float] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return {"rss_mb": rss / 1024, "fds": fds, "cpu_s": cpu}


def sample_all(groups: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """Per process name: RSS and fds summed over its group, CPU seconds."""
    out = {}
    for name, pids in groups.items():
        samples = [s for s in (proc_sample(p) for p in pids) if s is not None]
        if samples:
            out[name] = {k: round(sum(s[k] for s in samples), 2) for k in ("rss_mb", "fds", "cpu_s")}
    return out


def leader(settings: Settings) -> str | None:
    client = redis.Redis.from_url(settings.redis_url or "", socket_timeout=2)
    try:
        raw = client.get(leader_key(settings.namespace))
    except redis.RedisError:
        return None
    finally:
        client.close()
    return raw.decode().split(" ", 1)[0] if raw else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--period", type=int, default=5, help="seconds between fires of one schedule")
    parser.add_argument("--fault-every", type=float, default=30.0)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds a restarted service is down")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tickwork-soak-"))
    print(f"soak: working in {root}")
    mariadb, redis_server, rabbitmq = (
        PrivateMariaDB(root / "mariadb"),
        PrivateRedis(root / "redis"),
        PrivateRabbitMQ(root / "rabbitmq"),
    )
    services = {"mariadb": mariadb, "redis": redis_server, "rabbitmq": rabbitmq}
    cluster: Cluster | None = None
    try:
        for server in services.values():
            server.start()
        namespace = f"tickwork_soak_{uuid.uuid4().hex[:6]}"
        url = mariadb.create_database(namespace)
        settings = load_settings(
            database_url=url, broker_url=rabbitmq.url, redis_url=redis_server.url, namespace=namespace
        )
        engine = make_engine(url)
        executions = root / "executions.txt"
        for i in range(args.schedules):
            create_job(
                engine,
                JobSpec(
                    name=f"soak-{i}",
                    cron_expression=f"{i % args.period}/{args.period} * * * * *",
                    handler_type="python",
                    handler_data="soak_record",
                    parameters={"path": str(executions)},
                    retry_count=3,
                    retry_backoff_seconds=1,
                ),
            )
        rate = args.schedules / args.period
        print(f"soak: {args.schedules} schedules, {rate:g} fires/s, {args.minutes:g} min")
        cluster = Cluster(settings, root, args.threads)
        names = ["scheduler-0", "scheduler-1", "worker-0", "worker-1"]
        for name in names:
            cluster.start(name)
        deadline = time.time() + 120
        while not (executions.exists() and executions.stat().st_size > 0):
            if time.time() > deadline:
                raise RuntimeError("no execution within 120 s")
            time.sleep(0.5)
        time.sleep(5)
        started = time.time()
        groups = cluster.pids()
        groups.update({f"service-{k}": s.pids() for k, s in services.items()})
        first_sample = sample_all(groups)
        faults: list[dict[str, Any]] = []
        end = started + args.minutes * 60
        n = 0
        next_fault = started + args.fault_every
        while time.time() < end:
            time.sleep(max(0.0, min(next_fault, end) - time.time()))
            if time.time() >= end:
                break
            kind = FAULTS[n % len(FAULTS)]
            n += 1
            began = time.time()
            if kind == "kill-leader":
                victim = leader(settings) or "scheduler-0"
                cluster.kill(victim)
                restored = time.time()
                time.sleep(1)
                cluster.start(victim)
                detail = victim
            elif kind == "kill-worker":
                victim = f"worker-{n % 2}"
                cluster.kill(victim)
                restored = time.time()
                time.sleep(1)
                cluster.start(victim)
                detail = victim
            elif kind == "restart-rabbitmq":
                rabbitmq.stop_app()
                time.sleep(args.outage)
                rabbitmq.start_app()
                restored, detail = time.time(), "stop_app/start_app"
            elif kind == "restart-redis":
                redis_server.stop()
                time.sleep(args.outage)
                redis_server.start()
                restored, detail = time.time(), "stop/start (keys lost)"
            else:
                mariadb.kill()
                time.sleep(args.outage)
                mariadb.start()
                restored, detail = time.time(), "SIGKILL/start"
            faults.append({"kind": kind, "detail": detail, "began": began, "restored": restored})
            print(f"soak: {kind} ({detail}) at +{began - started:.0f} s, back after {restored - began:.1f} s")
            next_fault = began + args.fault_every
        exited = {name: p.poll() for name, p in cluster.procs.items() if p.poll() is not None}
        groups = cluster.pids()
        groups.update({f"service-{k}": s.pids() for k, s in services.items()})
        last_sample = sample_all(groups)
        window_end = time.time() - 2
        # Let every fire of the window settle (the outbox and the reaper finish their work).
        settle_deadline = time.time() + 180
        while time.time() < settle_deadline:
            with engine.connect() as conn:
                busy = conn.execute(
                    select(runs_table.c.id)
                    .where(runs_table.c.status.in_(("PENDING", "RUNNING")))
                    .where(runs_table.c.scheduled_for <= datetime.fromtimestamp(window_end, UTC))
                    .limit(1)
                ).first()
            if busy is None:
                break
            time.sleep(1)
        codes = cluster.stop(names)
        result = analyse(engine, executions, args, started, window_end, faults)
        result.update(
            exited_during_run=exited,
            exit_codes=codes,
            process_restarts_by_the_soak=dict(cluster.restarts),
            processes={"start": first_sample, "end": last_sample},
        )
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "soak.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        plot(result, args.out / "soak.png")
        summary = {k: result[k] for k in ("expected", "recorded", "executed", "lost", "duplicated")}
        print(f"soak: {summary}; results in {args.out}")
        engine.dispose()
    finally:
        if cluster is not None:
            for proc in cluster.procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
        for server in services.values():
            server.close()


def analyse(
    engine: Any,
    executions: Path,
    args: argparse.Namespace,
    started: float,
    window_end: float,
    faults: list[dict[str, Any]],
) -> dict[str, Any]:
    first = math.ceil(started)
    last = math.floor(window_end)
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                select(
                    runs_table.c.id,
                    runs_table.c.job_id,
                    runs_table.c.scheduled_for,
                    runs_table.c.attempt,
                    runs_table.c.status,
                    runs_table.c.trigger,
                    runs_table.c.started_at,
                ).where(
                    runs_table.c.scheduled_for >= datetime.fromtimestamp(first, UTC),
                    runs_table.c.scheduled_for <= datetime.fromtimestamp(last, UTC),
                )
            )
        )
    ours = {r.id: r for r in rows}
    firsts = Counter((r.job_id, r.scheduled_for) for r in rows if r.attempt == 1)
    lines = [line.split() for line in executions.read_text().splitlines() if line.strip()]
    by_run = Counter(int(line[0]) for line in lines if int(line[0]) in ours)
    fires_executed: defaultdict[tuple[int, str], int] = defaultdict(int)
    starts: dict[int, float] = {}
    for line in lines:
        run_id = int(line[0])
        if run_id in ours:
            fires_executed[(int(line[1]), line[3])] += 1
            starts.setdefault(run_id, float(line[4]))
    statuses = Counter(r.status for r in rows)
    lag_by_second: defaultdict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r.attempt == 1 and r.id in starts:
            sched = r.scheduled_for.timestamp()
            lag_by_second[int(sched)].append(starts[r.id] - sched)
    minutes = []
    for m in range(math.ceil((last - first + 1) / 60)):
        span = range(first + 60 * m, min(last + 1, first + 60 * (m + 1)))
        lags = [x for s in span for x in lag_by_second[s]]
        if lags:
            minutes.append(
                {
                    "minute": m + 1,
                    "fires": len(lags),
                    "p50": round(percentile(lags, 0.5), 3),
                    "p99": round(percentile(lags, 0.99), 3),
                    "max": round(max(lags), 3),
                }
            )
    seconds = sorted(lag_by_second)
    p99_by_second = {s: percentile(lag_by_second[s], 0.99) for s in seconds}
    for fault in faults:
        ok_from = None
        for s in range(int(fault["began"]), last - 2):
            if all(p99_by_second.get(s + k, math.inf) <= 1.0 for k in range(3)):
                ok_from = s
                break
        recovery = None if ok_from is None else round(max(0.0, ok_from - fault["restored"]), 2)
        fault["recovery_seconds"] = recovery
        fault["began"] = round(fault["began"] - started, 2)
        fault["restored"] = round(fault["restored"] - started, 2)
    executed_fires = {k for k, n in fires_executed.items() if n >= 1}
    # Schedule i fires at the seconds s with s % period == i % period.
    expected_fires = sum(
        sum(1 for s in range(first, last + 1) if s % args.period == i % args.period)
        for i in range(min(args.schedules, args.period))
    ) * (args.schedules // args.period)
    return {
        "minutes": round((last - first + 1) / 60, 2),
        "schedules": args.schedules,
        "fires_per_second": args.schedules / args.period,
        "window_seconds": last - first + 1,
        "expected": expected_fires,
        "recorded": len(firsts),
        "executed": len(executed_fires),
        "lost": max(0, expected_fires - len(executed_fires)),
        "duplicated": sum(1 for n in by_run.values() if n > 1) + sum(1 for n in firsts.values() if n > 1),
        "executed_again_as_a_retry": sum(1 for n in fires_executed.values() if n > 1),
        "statuses": dict(statuses),
        "lag_per_minute": minutes,
        "lag_overall": {
            "p50": round(percentile([x for v in lag_by_second.values() for x in v], 0.5), 3),
            "p99": round(percentile([x for v in lag_by_second.values() for x in v], 0.99), 3),
            "max": round(max((x for v in lag_by_second.values() for x in v), default=float("nan")), 3),
        },
        "lag_p99_by_second": {int(s - started): round(v, 3) for s, v in p99_by_second.items()},
        "faults": faults,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7))
    lag = result["lag_p99_by_second"]
    xs = sorted(lag)
    top.plot(xs, [lag[x] for x in xs], lw=0.8, label="start lag p99 per second")
    colors = {
        "kill-leader": "tab:red",
        "restart-rabbitmq": "tab:orange",
        "kill-worker": "tab:purple",
        "restart-redis": "tab:green",
        "restart-mariadb": "tab:brown",
    }
    for kind, color in colors.items():
        spans = [f for f in result["faults"] if f["kind"] == kind]
        for i, fault in enumerate(spans):
            top.axvspan(
                fault["began"], max(fault["restored"], fault["began"] + 0.5), color=color, alpha=0.3,
                label=kind if i == 0 else None,
            )  # fmt: skip
    top.set_yscale("symlog", linthresh=1.0)
    top.set_xlabel("seconds into the soak")
    top.set_ylabel("lag (s)")
    top.set_title(
        f"soak: {result['fires_per_second']:g} fires/s, {result['minutes']:g} min; expected "
        f"{result['expected']}, executed {result['executed']}, lost {result['lost']}, "
        f"duplicated {result['duplicated']}"
    )
    top.legend(fontsize=7, ncol=3)
    start, end = result["processes"]["start"], result["processes"]["end"]
    names = sorted(set(start) & set(end))
    x = range(len(names))
    bottom.bar([i - 0.2 for i in x], [start[n]["rss_mb"] for n in names], width=0.4, label="RSS at start")
    bottom.bar([i + 0.2 for i in x], [end[n]["rss_mb"] for n in names], width=0.4, label="RSS at end")
    bottom.set_xticks(list(x), names, rotation=20, fontsize=8)
    bottom.set_ylabel("MB")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"soak: wrote {path}")


if __name__ == "__main__":
    main()
