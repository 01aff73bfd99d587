"""Queries on ``jobs``: definitions, pause/resume, and their next fire time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic.alias_generators import to_camel
from sqlalchemy import ColumnElement, Engine, String, cast, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from tickwork.alerts import MANUAL_PAUSE
from tickwork.errors import Conflict, NotFound, PreconditionFailed
from tickwork.schedule.cron import next_fire_time
from tickwork.spec import JobSpec
from tickwork.store import events
from tickwork.store.engine import session_factory
from tickwork.store.models import Job, JobLateWatermark, jobs_table, utcnow

#: The fields a ``@job`` decorator defines: the code owns them, and an API edit of one is
#: refused (it would be reverted when the next worker or scheduler registers the code). The
#: other fields (``enabled``, ``parameters``, the misfire and overlap policies) are the
#: operator's: API edits of them survive restarts.
CODE_OWNED_FIELDS = (
    "name",
    "cron_expression",
    "run_at",
    "timezone",
    "handler_type",
    "handler_data",
    "retry_count",
    "retry_backoff_seconds",
    "max_backoff_seconds",
    "timeout_seconds",
    "queue",
)
DECORATOR_SOURCE = "decorator"


def check_code_owned_unchanged(job: Job, spec: JobSpec) -> None:
    """Refuse (:class:`Conflict`) an API edit that changes a code-owned field of a ``@job`` job."""
    if job.source != DECORATOR_SOURCE:
        return
    row = spec.to_row()
    for name in CODE_OWNED_FIELDS:
        if getattr(job, name) != row[name]:
            field = to_camel(name)
            raise Conflict(
                f"{field} of job {job.name!r} is defined in code by @job: change it in the code "
                "(the API may change enabled, parameters, misfirePolicy, misfireGraceSeconds "
                "and overlapPolicy)",
                field=field,
            )


def tag_filter(tag: str) -> ColumnElement[bool]:
    """Jobs whose ``tags`` hold ``tag``. Tags are ``[A-Za-z0-9_.:-]`` (:data:`spec.TAG_RE`), so
    the quoted tag is found exactly in the stored JSON text on every database (MySQL's JSON
    type, MariaDB's LONGTEXT, SQLite's TEXT); ``_`` is escaped in the ``LIKE``."""
    return cast(jobs_table.c.tags, String).contains(f'"{tag}"', autoescape=True)


def _compute_next_fire(row: dict[str, Any], now: datetime) -> datetime | None:
    return next_fire_time(row["cron_expression"], row["timezone"], row["run_at"], now)


def create_job(engine: Engine, spec: JobSpec, *, source: str = "api", now: datetime | None = None) -> Job:
    """Insert a job; a duplicate name raises :class:`Conflict` and writes nothing."""
    now = now or utcnow()
    row = spec.to_row()
    # A one-time job whose instant has passed still fires once ("now" is a runAt in the past).
    next_fire = row["run_at"] if row["run_at"] is not None else _compute_next_fire(row, now)
    job = Job(**row, source=source, next_fire_at=next_fire, created_at=now, updated_at=now)
    if not spec.enabled:
        job.paused_reason = MANUAL_PAUSE
    with session_factory(engine)() as session:
        session.add(job)
        try:
            if spec.late_after_seconds is not None:
                session.flush()  # the id, for the watermark
                # Lateness is judged from here on, never retroactively.
                session.add(JobLateWatermark(job_id=job.id, checked_until=now))
            session.commit()
        except IntegrityError:
            session.rollback()
            raise Conflict(f"a job named {spec.name!r} already exists") from None
        return job


def get_job(engine: Engine, job_id: int) -> Job:
    with session_factory(engine)() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job


def get_job_by_name(engine: Engine, name: str) -> Job:
    with session_factory(engine)() as session:
        job = session.scalars(select(Job).where(Job.name == name)).first()
        if job is None:
            raise NotFound(f"job {name!r} not found")
        return job


def list_jobs(
    engine: Engine,
    *,
    enabled: bool | None = None,
    name_contains: str | None = None,
    handler_type: str | None = None,
    tag: str | None = None,
    health: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """A page of jobs ordered by id, and the total matching the filters.

    ``tag``: jobs whose ``tags`` hold it (:func:`tag_filter`).
    """
    from tickwork.store.alerts import health_expression

    query = select(Job)
    count = select(func.count()).select_from(Job)
    filters: list[ColumnElement[bool]] = []
    if enabled is not None:
        filters.append(Job.enabled.is_(enabled))
    if name_contains:
        filters.append(Job.name.contains(name_contains, autoescape=True))
    if handler_type:
        filters.append(Job.handler_type == handler_type)
    if tag:
        filters.append(tag_filter(tag))
    if health:
        filters.append(health_expression() == health)
    for condition in filters:
        query = query.where(condition)
        count = count.where(condition)
    with session_factory(engine)() as session:
        jobs = list(session.scalars(query.order_by(Job.id).limit(limit).offset(offset)))
        total = session.scalar(count) or 0
        return jobs, total


def update_job(
    engine: Engine,
    job_id: int,
    spec: JobSpec,
    *,
    now: datetime | None = None,
    if_match: frozenset[int] | None = None,
) -> Job:
    """Replace a job's definition; its next fire is recomputed from now.

    ``if_match``: the versions the caller may overwrite (``If-Match``); when the job's version
    is not one of them :class:`PreconditionFailed` is raised and nothing changes. The ``UPDATE``
    itself compares the version read here (the mapper's ``version_id_col``), so a change that
    lands between this read and the commit is refused too.
    """
    now = now or utcnow()
    row = spec.to_row()
    with session_factory(engine)() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if if_match is not None and job.version not in if_match:
            raise _moved(job_id, job.version)
        schedule_changed = (job.cron_expression, job.timezone, job.run_at) != (
            row["cron_expression"],
            row["timezone"],
            row["run_at"],
        )
        resumed = row["enabled"] and not job.enabled
        paused = job.enabled and not row["enabled"]
        if row["late_after_seconds"] != job.late_after_seconds:
            # A new (or changed) lateAfterSeconds judges the fires from now on, not the past
            # hour's at once; turned off, the job is no longer late.
            session.merge(JobLateWatermark(job_id=job.id, checked_until=now))
            if row["late_after_seconds"] is None:
                job.late_since = None
        for key, value in row.items():
            setattr(job, key, value)
        if resumed:
            job.paused_reason, job.resumed_at = None, now
        elif paused:
            job.paused_reason = MANUAL_PAUSE
        if schedule_changed or (resumed and row["cron_expression"]):
            # A resumed cron job's misfire window starts now (see :func:`set_enabled`).
            job.next_fire_at = row["run_at"] if row["run_at"] is not None else _compute_next_fire(row, now)
        job.updated_at = now
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise Conflict(f"a job named {spec.name!r} already exists") from None
        except StaleDataError:
            session.rollback()
            if if_match is None:
                raise
            raise _moved(job_id, get_job(engine, job_id).version) from None
        return job


def _moved(job_id: int, version: int) -> PreconditionFailed:
    return PreconditionFailed(
        f"job {job_id} changed since it was read (it is at version {version} now): "
        "read it again and redo the change",
        version=version,
    )


def delete_job(engine: Engine, job_id: int) -> None:
    """Delete a job and (by cascade) its run history."""
    with session_factory(engine)() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        session.delete(job)
        session.commit()


def set_enabled(engine: Engine, job_id: int, enabled: bool, *, now: datetime | None = None) -> Job:
    """Pause or resume.

    The misfire window of a job starts when it was last enabled: resuming a paused cron job
    moves its next fire to the first one after the resume, so the times it was paused (or
    created paused) are never fired, missed or caught up. A one-time job that has not fired
    keeps its instant (it fires once on resume, as a past ``runAt`` does at creation). Resuming
    a job that is already enabled changes nothing (a scheduler outage's misfires stay due).
    """
    now = now or utcnow()
    c = jobs_table.c
    with engine.begin() as conn:
        row = conn.execute(
            select(c.enabled, c.cron_expression, c.timezone, c.run_at).where(c.id == job_id)
        ).first()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        values: dict[str, Any] = {"enabled": enabled, "updated_at": now, "version": c.version + 1}
        if enabled and not row.enabled and row.cron_expression:
            values["next_fire_at"] = _compute_next_fire(dict(row._mapping), now)
        if enabled and not row.enabled:
            values.update(paused_reason=None, resumed_at=now)  # auto-pause counts from here
        elif not enabled and row.enabled:
            values["paused_reason"] = MANUAL_PAUSE
        conn.execute(update(jobs_table).where(c.id == job_id).values(**values))
    return get_job(engine, job_id)


def upsert_decorated_job(engine: Engine, spec: JobSpec, *, now: datetime | None = None) -> Job:
    """Register a ``@job`` function's definition by name (workers and schedulers do this at start).

    The decorator is the source of truth for its code-owned fields (:data:`CODE_OWNED_FIELDS`),
    so a changed definition replaces them; an unchanged one is left alone (its ``next_fire_at``
    keeps its place).
    """
    now = now or utcnow()
    try:
        existing = get_job_by_name(engine, spec.name)
    except NotFound:
        try:
            created = create_job(engine, spec, source=DECORATOR_SOURCE, now=now)
        except Conflict:  # another process registered it at the same moment
            existing = get_job_by_name(engine, spec.name)
        else:
            events.record(
                engine,
                actor=events.DECORATOR,
                kind=events.EventKind.JOB_CREATED,
                job_id=created.id,
                details={
                    "name": created.name,
                    "changes": events.changed_fields({}, events.job_definition(created)),
                },
            )
            return created
    # The operator's fields (pausing, parameters, policies) are not the code's: re-registering
    # the code keeps them as the API left them.
    operator_owned = set(JobSpec.model_fields) - set(CODE_OWNED_FIELDS)
    kept = {name: getattr(existing, name) for name in operator_owned}
    spec = JobSpec.model_validate({**spec.model_dump(by_alias=False), **kept})
    current = JobSpec.model_validate({key: getattr(existing, key) for key in JobSpec.model_fields})
    if current == spec:
        return existing
    updated = update_job(engine, existing.id, spec, now=now)
    changes = events.changed_fields(events.job_definition(existing), events.job_definition(updated))
    events.record(
        engine,
        actor=events.DECORATOR,
        kind=events.EventKind.JOB_UPDATED,
        job_id=updated.id,
        details={"name": updated.name, "changes": changes},
    )
    return updated


def stored_queues(engine: Engine) -> set[str]:
    """The queues stored jobs name (workers consume them; metrics report their depth)."""
    with engine.connect() as conn:
        return {str(q) for q in conn.scalars(select(jobs_table.c.queue).distinct())}
