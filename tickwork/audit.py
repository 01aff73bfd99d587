"""What goes into the audit trail for each change the API, the CLI and ``@job`` make.

Each function writes its event right after the change it describes (its own transaction), with
who made it (:class:`~tickwork.store.events.Actor`). SQL is in :mod:`tickwork.store.events`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from tickwork.redaction import redact_json, redact_url
from tickwork.store import events
from tickwork.store.events import CLI, DECORATOR, TICKWORK, Actor, EventKind, changed_fields, job_definition
from tickwork.store.models import Event, Job

__all__ = ["CLI", "DECORATOR", "TICKWORK", "Actor", "EventKind", "job_definition", "masked_details"]


def job_created(engine: Engine, actor: Actor, job: Job) -> None:
    events.record(
        engine,
        actor=actor,
        kind=EventKind.JOB_CREATED,
        job_id=job.id,
        details={"name": job.name, "changes": changed_fields({}, job_definition(job))},
    )


def job_updated(engine: Engine, actor: Actor, before: dict[str, Any], job: Job) -> None:
    """``before``: :func:`job_definition` of the job as it was. No event when nothing changed."""
    changes = changed_fields(before, job_definition(job))
    if changes:
        events.record(
            engine,
            actor=actor,
            kind=EventKind.JOB_UPDATED,
            job_id=job.id,
            details={"name": job.name, "changes": changes},
        )


def job_deleted(engine: Engine, actor: Actor, job: Job) -> None:
    events.record(
        engine,
        actor=actor,
        kind=EventKind.JOB_DELETED,
        job_id=job.id,
        details={"name": job.name, "changes": changed_fields(job_definition(job), {})},
    )


def job_enabled(engine: Engine, actor: Actor, job: Job, *, was_enabled: bool) -> None:
    """``job.paused`` or ``job.resumed`` (with ``enabled`` before and after)."""
    events.record(
        engine,
        actor=actor,
        kind=EventKind.JOB_RESUMED if job.enabled else EventKind.JOB_PAUSED,
        job_id=job.id,
        details={
            "name": job.name,
            "changes": changed_fields({"enabled": was_enabled}, {"enabled": job.enabled}),
        },
    )


def job_triggered(engine: Engine, actor: Actor, job: Job, run_id: int, *, key: str | None = None) -> None:
    details: dict[str, Any] = {"name": job.name}
    if key is not None:
        details["idempotencyKey"] = key
    events.record(
        engine, actor=actor, kind=EventKind.JOB_TRIGGERED, job_id=job.id, run_id=run_id, details=details
    )


def job_backfilled(engine: Engine, actor: Actor, job: Job, details: dict[str, Any]) -> None:
    events.record(
        engine,
        actor=actor,
        kind=EventKind.JOB_BACKFILLED,
        job_id=job.id,
        details={"name": job.name, **details},
    )


def run_replayed(engine: Engine, actor: Actor, *, job_id: int, dead_run_id: int, new_run_id: int) -> None:
    events.record(
        engine,
        actor=actor,
        kind=EventKind.RUN_REPLAYED,
        job_id=job_id,
        run_id=dead_run_id,
        details={"newRunId": new_run_id},
    )


def runs_purged(engine: Engine, actor: Actor, run_ids: list[int] | None, purged: int) -> None:
    """One ``run.purged`` per named run (with its job), or one for "every dead run"."""
    if run_ids is None:
        events.record(engine, actor=actor, kind=EventKind.RUN_PURGED, details={"all": True, "purged": purged})
        return
    events.record_per_run(engine, actor=actor, kind=EventKind.RUN_PURGED, run_ids=run_ids)


def masked_details(event: Event) -> dict[str, Any] | None:
    """An event's details as a ``viewer`` may read them: URL userinfo and credential-like keys of
    ``handlerData`` / ``parameters`` values replaced with ``***`` (as job reads are)."""
    details = event.details
    if not details or "changes" not in details:
        return details
    changes: dict[str, Any] = {}
    for name, change in details["changes"].items():
        if name == "handlerData":
            changes[name] = {k: redact_url(v) if isinstance(v, str) else v for k, v in change.items()}
        elif name == "parameters":
            changes[name] = {k: redact_json(v) for k, v in change.items()}
        else:
            changes[name] = change
    return {**details, "changes": changes}
