"""The soak's job: one line per execution (run id, attempt, scheduled time, start time).

Imported by the soak's workers (``TICKWORK_IMPORTS=benchmarks.soak_jobs``).
"""

from __future__ import annotations

import os
import time

from tickwork import job
from tickwork.middleware.attempt import current_attempt


@job(name="soak_record")
def soak_record(path: str) -> None:
    attempt = current_attempt()
    assert attempt is not None
    o = attempt.options
    line = f"{o['run_id']} {o['job_id']} {o['attempt']} {o['scheduled_for']} {time.time():.3f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
