"""Decisions about a schedule going wrong: health, late fires, auto-pause, notification shape.

Pure functions over plain values (no I/O), so the rules are stated and tested in one place; the
store (:mod:`tickwork.store.alerts`) applies them inside the transactions that change state, and
:mod:`tickwork.notify` delivers what they record.

Health of a job, first match wins:

``paused``
    the job is disabled (by hand, or by auto-pause: ``pausedReason`` says which);
``late``
    a fire was reported late and no fire has succeeded on time since;
``failing``
    the last finished run (SUCCESS or DEAD) is DEAD;
``healthy``
    anything else (including a job that never ran).

A fire (one ``scheduledFor`` of a job, all its attempts) is *late* when it has not reached
SUCCESS ``lateAfterSeconds`` after its scheduled time, retries included; a fire never made (no
scheduler ran) is late too. The decision is final once that instant has passed, so the sweep
decides each fire once and keeps a watermark.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

#: The header carrying ``sha256=<hex HMAC-SHA256 of the body>``.
SIGNATURE_HEADER = "X-Tickwork-Signature"
SIGNATURE_PREFIX = "sha256="


class Health(enum.StrEnum):
    HEALTHY = "healthy"
    LATE = "late"
    FAILING = "failing"
    PAUSED = "paused"


class Event(enum.StrEnum):
    RUN_DEAD = "run.dead"
    JOB_LATE = "job.late"
    JOB_PAUSED = "job.paused"  # auto-pause only; a pause by hand is not news to anyone
    JOB_RECOVERED = "job.recovered"


MANUAL_PAUSE = "manual"


def job_health(*, enabled: bool, late: bool, last_final_status: str | None) -> Health:
    """The health of a job from its state (see the module docstring for the order)."""
    if not enabled:
        return Health.PAUSED
    if late:
        return Health.LATE
    if last_final_status == "DEAD":
        return Health.FAILING
    return Health.HEALTHY


def success_recovers(
    *,
    finished_at: datetime,
    scheduled_for: datetime,
    since: datetime,
    late: bool,
    late_after_seconds: int | None,
) -> bool:
    """Whether a SUCCESS clears a job's alert state (``job.recovered``): a success after the
    last report; for a late job, a success on time (a fire that succeeds but late again does
    not end the lateness: the job would flap between late and recovered)."""
    if finished_at <= since:
        return False
    if late and late_after_seconds:
        return finished_at <= late_deadline(scheduled_for, late_after_seconds)
    return True


def late_deadline(scheduled_for: datetime, late_after_seconds: int) -> datetime:
    """The instant a fire must have succeeded by."""
    return scheduled_for + timedelta(seconds=late_after_seconds)


def fire_is_late(
    *, scheduled_for: datetime, late_after_seconds: int, succeeded_at: datetime | None, now: datetime
) -> bool:
    """True once the deadline has passed without a SUCCESS by then (``succeeded_at``: the
    fire's first success, if any). Before the deadline nothing is decided (False)."""
    deadline = late_deadline(scheduled_for, late_after_seconds)
    if now < deadline:
        return False
    return succeeded_at is None or succeeded_at > deadline


def auto_pause_reason(recent_final_statuses: Sequence[str], threshold: int | None) -> str | None:
    """The ``pausedReason`` when the last ``threshold`` finished runs (newest first, only those
    since the job was last resumed) are all DEAD; None to leave the job running."""
    if threshold is None or threshold < 1 or len(recent_final_statuses) < threshold:
        return None
    if all(status == "DEAD" for status in recent_final_statuses[:threshold]):
        return f"auto: {threshold} consecutive dead runs"
    return None


def delivery_delay(attempts: int, *, base_seconds: float, max_seconds: float) -> float:
    """Seconds before retry ``attempts + 1`` of a notification: doubling from ``base``, capped."""
    return float(min(max_seconds, base_seconds * (2 ** max(0, attempts - 1))))


def delivery_expired(created_at: datetime, now: datetime, *, deadline_seconds: float) -> bool:
    """A notification still undelivered this long after it was recorded is given up (FAILED)."""
    return (now - created_at).total_seconds() >= deadline_seconds


def notification_targets(global_url: str | None, job_url: str | None) -> list[str]:
    """Every event goes to TICKWORK_NOTIFY_URL and to the job's own ``notifyUrl`` (once each)."""
    return list(dict.fromkeys(url for url in (global_url, job_url) if url))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def job_document(job: Any) -> dict[str, Any]:
    """The ``job`` object of a notification (camelCase, as the API writes jobs)."""
    return {
        "id": job.id,
        "name": job.name,
        "enabled": bool(job.enabled),
        "pausedReason": job.paused_reason,
        "lateAfterSeconds": job.late_after_seconds,
        "pauseAfterFailures": job.pause_after_failures,
    }


def run_document(run: Any) -> dict[str, Any]:
    """The ``run`` object of a notification."""
    return {
        "id": run.id,
        "scheduledFor": _iso(run.scheduled_for),
        "attempt": run.attempt,
        "status": run.status,
        "error": run.error,
        "finishedAt": _iso(run.finished_at),
        "lateAt": _iso(run.late_at),
    }


def missing_fire_document(scheduled_for: datetime) -> dict[str, Any]:
    """The ``run`` of a ``job.late`` for a fire that was never made (no scheduler ran)."""
    return {
        "id": None,
        "scheduledFor": _iso(scheduled_for),
        "attempt": None,
        "status": "MISSING",
        "error": "no scheduler made this fire",
        "finishedAt": None,
        "lateAt": None,
    }


def notification_body(event: Event, at: datetime, job: dict[str, Any], run: dict[str, Any] | None) -> str:
    """The exact JSON text POSTed (and signed): ``{"event", "at", "job", "run"}``."""
    return json.dumps(
        {"event": event.value, "at": _iso(at), "job": job, "run": run}, separators=(",", ":"), sort_keys=True
    )


def sign(body: bytes, secret: str) -> str:
    """The ``X-Tickwork-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str) -> bool:
    """What a receiver does: compare in constant time."""
    return hmac.compare_digest(sign(body, secret), signature)
