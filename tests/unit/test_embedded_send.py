"""``fn.send()`` from a script beside a running ``tickwork dev`` (embedded mode, issue 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tickwork.config import load_settings
from tickwork.embedded import build
from tickwork.store.engine import make_engine, upgrade
from tickwork.store.runs import get_run

pytestmark = pytest.mark.unit

#: The dev process's outbox sweep publishes a never-published row 2 s after it was written and
#: looks every second; the rest is headroom for a busy machine. The outbox grace for rows that
#: *were* published (the old path) is 30 s, so a run that waited for it fails this bound.
DEADLINE_SECONDS = 10.0


def test_send_from_another_process_runs_within_the_sweep_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tickwork.db'}"
    upgrade(url)
    settings = load_settings(
        database_url=url,
        broker_url="memory://",
        redis_url="",
        namespace="twsend",
        imports="tests.worker_jobs",
    )
    assert settings.outbox_grace_seconds >= 3 * DEADLINE_SECONDS
    dev = build(settings, engine=make_engine(settings), worker_threads=2)
    dev.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
        env.update(
            PYTHONPATH=str(ROOT),
            TICKWORK_DATABASE_URL=url,
            TICKWORK_BROKER_URL="memory://",
            TICKWORK_NAMESPACE="twsend",
        )
        script = "from tests.worker_jobs import tw_add; print(tw_add.send(2, 3))"
        sent = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert sent.returncode == 0, sent.stderr
        run_id = int(sent.stdout.strip())
        started = time.monotonic()
        while get_run(dev.engine, run_id).status != "SUCCESS":
            assert time.monotonic() - started < DEADLINE_SECONDS, get_run(dev.engine, run_id).status
            time.sleep(0.1)
        print(f"send -> SUCCESS in {time.monotonic() - started:.2f} s")
        run = get_run(dev.engine, run_id)
        assert (run.output, run.trigger) == ("5", "manual")
    finally:
        dev.stop()
        dev.engine.dispose()
