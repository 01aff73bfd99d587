"""Helpers for worker tests: waiting, worker subprocesses, run rows."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, select

from tickwork.config import Settings
from tickwork.middleware.heartbeat import HeartbeatStore
from tickwork.store.models import JobRun, runs_table

T = TypeVar("T")

WORKER_ENV = {
    "imports": "tests.worker_jobs",
    "heartbeat_ttl_seconds": "3",
    "heartbeat_interval_seconds": "0.5",
    "log_level": "INFO",
}


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def runs_of_job(engine: Engine, job_id: int) -> list[JobRun]:
    from tickwork.store.engine import session_factory

    with session_factory(engine)() as session:
        return list(session.scalars(select(JobRun).where(JobRun.job_id == job_id).order_by(JobRun.attempt)))


def statuses(engine: Engine, job_id: int) -> list[str]:
    return [r.status for r in runs_of_job(engine, job_id)]


def count_running(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(list(conn.execute(select(runs_table.c.id).where(runs_table.c.status == "RUNNING"))))


class WorkerProcess:
    """``python -m tickwork worker`` in its own session (so the test can kill exactly its group)."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        threads: int = 2,
        processes: int = 1,
        extra_env: dict[str, Any] | None = None,
    ) -> None:
        from tests.conftest import settings_env, tickwork_cmd

        self.log_path = log_path
        env = settings_env(settings, **{**WORKER_ENV, **(extra_env or {})})
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            tickwork_cmd("worker", "--processes", str(processes), "--threads", str(threads)),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the whole group: the Dramatiq parent and its worker processes."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.terminate(20)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of this group only
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def worker_processes(
    settings: Settings, tmp_path: Path, count: int, **kwargs: Any
) -> Iterator[list[WorkerProcess]]:
    workers = [WorkerProcess(settings, tmp_path / f"worker{i}.log", **kwargs) for i in range(count)]
    store = HeartbeatStore.from_settings(settings)
    try:
        try:
            wait_for(lambda: len(store.alive_workers()) >= count, 60, 0.2, f"{count} worker heartbeats")
        except AssertionError:
            for w in workers:
                print(w.output())
            raise
        yield workers
    finally:
        for w in workers:
            w.stop()
        store.close()


def terminate_all(procs: dict[str, subprocess.Popen[bytes]], timeout: float = 15) -> dict[str, int]:
    """SIGTERM every live process, then wait (SIGKILL after ``timeout``); their exit codes."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = {}
    for name, proc in procs.items():
        try:
            codes[name] = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[name] = proc.wait(timeout=5)
    return codes
