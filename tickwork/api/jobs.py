"""``/jobs``: definitions (create, list, get, replace, patch, delete), trigger, pause, resume, preview."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool

from tickwork import audit, operations
from tickwork import backfill as backfills
from tickwork.alerts import Health
from tickwork.api.auth import Principal, Reader, Writer
from tickwork.api.ids import MAX_ID, PLAIN_DECIMAL
from tickwork.api.schemas import (
    BackfillRequest,
    BackfillResult,
    ErrorBody,
    JobOut,
    JobPage,
    JobPatch,
    NextFires,
    RunOut,
    RunPage,
    TriggerRequest,
    ValidationErrorBody,
)
from tickwork.api.state import ApiState, State
from tickwork.errors import ValidationError
from tickwork.schedule.cron import CronSchedule
from tickwork.spec import TAG_RE, JobSpec
from tickwork.store import jobs as job_store
from tickwork.store import runs as run_store
from tickwork.store.alerts import health_of
from tickwork.store.models import Job
from tickwork.vocabulary import HandlerType, RunStatus, utcnow

log = logging.getLogger(__name__)

JobId = Annotated[int, PLAIN_DECIMAL, Path(ge=1, le=MAX_ID, description="job id")]

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing, invalid or expired token"},
    403: {"model": ErrorBody, "description": "the token's role may not do this"},
}
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    422: {
        "model": ValidationErrorBody,
        "description": "invalid input (or a body over TICKWORK_MAX_PAYLOAD_BYTES): the field and the reason",
    },
}
ONE_JOB_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    404: {"model": ErrorBody, "description": "no such job"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ONE_JOB_ERRORS,
    409: {
        "model": ErrorBody,
        "description": "another job has this name, or the edit changes a field defined in code by @job",
    },
}

EDIT_ERRORS: dict[int | str, dict[str, Any]] = {
    **WRITE_ERRORS,
    412: {"model": ErrorBody, "description": "If-Match names a version the job has moved past"},
}
#: ``If-Match`` of ``PUT`` / ``PATCH``: the ``ETag`` a ``GET`` answered.
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=1000,
        description='the ETag of the version read (`"7"`); the edit is refused with 412 if the job moved',
    ),
]
#: An entity tag as RFC 9110 writes it: ``"7"`` or ``W/"7"``.
ENTITY_TAG_RE = re.compile(r'(W/)?"([\x21\x23-\x7e]*)"')

router = APIRouter(prefix="/jobs", tags=["jobs"])


def etag(response: Response, job: Job) -> None:
    """``ETag: "<version>"``: the job's version, which every change of its definition moves."""
    response.headers["ETag"] = f'"{job.version}"'


def parse_if_match(value: str | None) -> frozenset[int] | None:
    """The versions an ``If-Match`` allows to be overwritten; None for no header or ``*``.

    Entity tags are compared strongly (RFC 9110 13.1.1): a weak ``W/"7"`` matches nothing. A
    header that is not a list of entity tags is a 422 naming ``If-Match``.
    """
    if value is None:
        return None
    versions: set[int] = set()
    for part in (p.strip() for p in value.split(",")):
        if part == "*":
            return None
        match = ENTITY_TAG_RE.fullmatch(part)
        if match is None:
            raise RequestValidationError(
                [
                    {
                        "loc": ("header", "If-Match"),
                        "msg": 'must be entity tags as ETag sends them, e.g. "7" (or *)',
                        "type": "value_error",
                    }
                ]
            )
        if not match.group(1) and match.group(2).isdigit() and len(match.group(2)) < 19:
            versions.add(int(match.group(2)))
    return frozenset(versions)


def log_write(event: str, who: Principal, **ids: int) -> None:
    """One INFO line per write: what, by whom (the token's ``sub``), ids as fields."""
    log.info("%s by %s (%s)", event, who.subject, who.role.value, extra=ids)


def actor(who: Principal) -> audit.Actor:
    """The audit trail's "who" for a request: the token's ``sub`` and role."""
    return audit.Actor(who.subject, who.role.value)


def check_tag_query(tag: str) -> None:
    """``?tag=``: a tag as jobs spell them (:data:`spec.TAG_RE`), else 422 naming ``tag``."""
    if not TAG_RE.fullmatch(tag):
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "tag"),
                    "msg": "a tag is 1-64 letters, digits and _ . : - (starting with a letter or digit)",
                    "type": "value_error",
                }
            ]
        )


def job_out(state: ApiState, job: Job, *, masked: bool = False) -> JobOut:
    """A job as the API answers it, with its health (issue 13)."""
    found = health_of(state.engine, [job.id]).get(job.id)
    return JobOut.of(
        job,
        masked=masked,
        health=found.health if found else None,
        last_success_at=found.last_success_at if found else None,
    )


def check_spec(state: ApiState, spec: JobSpec) -> None:
    operations.check_spec(state.settings, state.engine, spec)


def spec_of(job: Job) -> dict[str, Any]:
    """A stored job's definition as JobSpec field values (snake_case)."""
    return {name: getattr(job, name) for name in JobSpec.model_fields}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses={k: v for k, v in WRITE_ERRORS.items() if k != 404},
    summary="Create a job",
)
def create_job(spec: JobSpec, state: State, who: Writer) -> JobOut:
    check_spec(state, spec)
    job = job_store.create_job(state.engine, spec)
    audit.job_created(state.engine, actor(who), job)
    log_write("job created", who, job_id=job.id)
    state.job_changed(job.id)
    return job_out(state, job)


@router.get("", response_model=JobPage, responses=READ_ERRORS, summary="List jobs")
def list_jobs(
    *,
    state: State,
    who: Reader,
    enabled: bool | None = None,
    name: Annotated[str | None, Query(max_length=200, description="substring of the name")] = None,
    handler_type: Annotated[HandlerType | None, Query(alias="handlerType")] = None,
    tag: Annotated[str | None, Query(description="jobs with this tag")] = None,
    health: Annotated[Health | None, Query(description="healthy, late, failing or paused")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JobPage:
    if tag is not None:
        check_tag_query(tag)
    jobs, total = job_store.list_jobs(
        state.engine,
        enabled=enabled,
        name_contains=name,
        handler_type=handler_type.value if handler_type else None,
        tag=tag,
        health=health.value if health else None,
        limit=limit,
        offset=offset,
    )
    healths = health_of(state.engine, [j.id for j in jobs])
    items = []
    for j in jobs:
        found = healths.get(j.id)
        items.append(
            JobOut.of(
                j,
                masked=who.masked,
                health=found.health if found else None,
                last_success_at=found.last_success_at if found else None,
            )
        )
    return JobPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut, responses=ONE_JOB_ERRORS, summary="Get a job")
def get_job(job_id: JobId, state: State, who: Reader, response: Response) -> JobOut:
    job = job_store.get_job(state.engine, job_id)
    etag(response, job)
    return job_out(state, job, masked=who.masked)


@router.put("/{job_id}", response_model=JobOut, responses=EDIT_ERRORS, summary="Replace a job")
def replace_job(
    *, job_id: JobId, spec: JobSpec, state: State, who: Writer, response: Response, if_match: IfMatch = None
) -> JobOut:
    versions = parse_if_match(if_match)
    current = job_store.get_job(state.engine, job_id)  # 404 before 422 on the database checks
    job_store.check_code_owned_unchanged(current, spec)
    check_spec(state, spec)
    job = job_store.update_job(state.engine, job_id, spec, if_match=versions)
    etag(response, job)
    audit.job_updated(state.engine, actor(who), audit.job_definition(current), job)
    log_write("job replaced", who, job_id=job.id)
    state.job_changed(job.id)
    return job_out(state, job)


@router.patch("/{job_id}", response_model=JobOut, responses=EDIT_ERRORS, summary="Change some fields")
def patch_job(
    *, job_id: JobId, patch: JobPatch, state: State, who: Writer, response: Response, if_match: IfMatch = None
) -> JobOut:
    versions = parse_if_match(if_match)
    current = job_store.get_job(state.engine, job_id)
    changes = patch.changes()
    merged = {**spec_of(current), **changes}
    # Switching between a cron schedule and a one-time instant drops the other.
    if changes.get("cron_expression") and "run_at" not in changes:
        merged["run_at"] = None
    if changes.get("run_at") is not None and "cron_expression" not in changes:
        merged["cron_expression"] = None
    # A pydantic.ValidationError here is answered 422 by the app's handler.
    spec = JobSpec.model_validate({to_camel(key): value for key, value in merged.items()})
    job_store.check_code_owned_unchanged(current, spec)
    check_spec(state, spec)
    job = job_store.update_job(state.engine, job_id, spec, if_match=versions)
    etag(response, job)
    audit.job_updated(state.engine, actor(who), audit.job_definition(current), job)
    log_write(f"job changed ({', '.join(to_camel(k) for k in sorted(changes))})", who, job_id=job.id)
    state.job_changed(job.id)
    return job_out(state, job)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=ONE_JOB_ERRORS,
    summary="Delete a job and its run history",
)
def delete_job(job_id: JobId, state: State, who: Writer) -> Response:
    job = job_store.get_job(state.engine, job_id)
    job_store.delete_job(state.engine, job_id)
    audit.job_deleted(state.engine, actor(who), job)
    log_write("job deleted", who, job_id=job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{job_id}/pause", response_model=JobOut, responses=ONE_JOB_ERRORS, summary="Pause a job")
def pause_job(job_id: JobId, state: State, who: Writer, response: Response) -> JobOut:
    was = job_store.get_job(state.engine, job_id).enabled
    job = job_store.set_enabled(state.engine, job_id, False)
    etag(response, job)
    audit.job_enabled(state.engine, actor(who), job, was_enabled=was)
    log_write("job paused", who, job_id=job.id)
    return job_out(state, job)


@router.post("/{job_id}/resume", response_model=JobOut, responses=ONE_JOB_ERRORS, summary="Resume a job")
def resume_job(job_id: JobId, state: State, who: Writer, response: Response) -> JobOut:
    was = job_store.get_job(state.engine, job_id).enabled
    job = job_store.set_enabled(state.engine, job_id, True)
    etag(response, job)
    audit.job_enabled(state.engine, actor(who), job, was_enabled=was)
    log_write("job resumed", who, job_id=job.id)
    state.job_changed(job.id)
    return job_out(state, job)


@router.post(
    "/{job_id}/trigger",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunOut,
    responses=ONE_JOB_ERRORS,
    summary="Run a job now",
    description=(
        "Writes a PENDING run (the outbox row) and publishes it. If the broker is unreachable the "
        "run stays PENDING and the scheduler's outbox sweep publishes it later."
    ),
)
async def trigger_job(
    *,
    job_id: JobId,
    state: State,
    who: Writer,
    response: Response,
    body: Annotated[TriggerRequest | None, Body()] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=1000,
            description="a repeat with this key within 24 h answers the same run (422 if its body differs)",
        ),
    ] = None,
) -> RunOut:
    if idempotency_key is not None:
        operations.check_idempotency_key(idempotency_key)
    job = await run_in_threadpool(job_store.get_job, state.engine, job_id)
    arguments: dict[str, Any] | None = None
    if body is not None and (body.args is not None or body.kwargs is not None):
        if job.handler_type != HandlerType.PYTHON:
            raise ValidationError("args", "only Python jobs take call arguments")
        arguments = {"args": body.args or [], "kwargs": body.kwargs or {}}
    if idempotency_key is None:
        run_id = await run_in_threadpool(_fire, state, job, arguments)
    else:
        key = idempotency_key
        run_id, made = await run_in_threadpool(
            lambda: operations.trigger_once(
                state.settings, state.engine, state.get_broker(), job, key=key, arguments=arguments
            )
        )
        if not made:
            response.headers["Idempotent-Replayed"] = "true"
            run = await run_in_threadpool(run_store.get_run, state.engine, run_id)
            return RunOut.of(run)
    await run_in_threadpool(audit.job_triggered, state.engine, actor(who), job, run_id, key=idempotency_key)
    log_write("job triggered", who, job_id=job.id, run_id=run_id)
    run = await run_in_threadpool(run_store.get_run, state.engine, run_id)
    return RunOut.of(run)


@router.post(
    "/{job_id}/backfill",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BackfillResult,
    responses=ONE_JOB_ERRORS,
    summary="Fire every scheduled time of a past range",
    description=(
        "Writes one run (trigger `backfill`) for every time the job's schedule has in `[start, end)`, "
        "in its time zone, skipping times that already have a fire. At most "
        "TICKWORK_BACKFILL_MAX_FIRES fires (more is a 422 saying how many). The runs become due "
        "at TICKWORK_BACKFILL_FIRES_PER_SECOND and the scheduler publishes them as they do, so "
        "on-time fires are not queued behind them."
    ),
)
def backfill_job(job_id: JobId, body: BackfillRequest, state: State, who: Writer) -> BackfillResult:
    job = job_store.get_job(state.engine, job_id)
    result = backfills.backfill(state.settings, state.engine, job, body.start, body.end)
    details = {
        "start": body.start.isoformat(),
        "end": body.end.isoformat(),
        "fires": result.fires,
        "skippedExisting": result.skipped_existing,
    }
    audit.job_backfilled(state.engine, actor(who), job, details)
    log_write(f"job backfilled ({result.fires} fires)", who, job_id=job.id)
    return BackfillResult(fires=result.fires, skipped_existing=result.skipped_existing)


def _fire(state: ApiState, job: Job, arguments: dict[str, Any] | None) -> int:
    return operations.trigger(state.settings, state.engine, state.get_broker(), job, arguments=arguments)


@router.get(
    "/{job_id}/next-fires",
    response_model=NextFires,
    responses=ONE_JOB_ERRORS,
    summary="Preview the next fire times",
)
def next_fires(
    job_id: JobId,
    state: State,
    _: Reader,
    count: Annotated[int, Query(ge=1, le=100)] = 5,
    after: Annotated[datetime | None, Query(description="default: now")] = None,
) -> NextFires:
    job = job_store.get_job(state.engine, job_id)
    start = utcnow() if after is None else aware(after, "after")
    fires: list[datetime] = []
    if job.cron_expression:
        try:
            fires = CronSchedule(job.cron_expression, job.timezone).next_fires(start, count)
        except (OverflowError, ValueError):
            fires = []  # past the end of the calendar: no more fires
    elif job.run_at is not None and job.run_at > start:
        fires = [job.run_at]
    return NextFires(job_id=job.id, timezone=job.timezone, fires=fires)


@router.get("/{job_id}/runs", response_model=RunPage, responses=ONE_JOB_ERRORS, summary="A job's runs")
def job_runs(
    *,
    job_id: JobId,
    state: State,
    who: Reader,
    status_filter: Annotated[list[RunStatus] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, PLAIN_DECIMAL, Query(alias="beforeId", ge=1, le=MAX_ID)] = None,
) -> RunPage:
    job_store.get_job(state.engine, job_id)
    runs = run_store.list_runs(
        state.engine,
        job_id=job_id,
        status=[s.value for s in status_filter] if status_filter else None,
        limit=limit,
        before_id=before_id,
    )
    return run_page(runs, limit, masked=who.masked)


def run_page(runs: list[Any], limit: int, *, masked: bool = False) -> RunPage:
    items = [RunOut.of(r, masked=masked) for r in runs]
    return RunPage(items=items, next_before_id=items[-1].id if len(items) == limit else None)


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def aware(value: datetime, field: str) -> datetime:
    """Query datetimes: naive ones are UTC; clamp to what every database stores."""
    try:
        result = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise RequestValidationError(
            [
                {
                    "loc": ("query", field),
                    "msg": "outside the range of representable UTC instants",
                    "type": "value_error",
                }
            ]
        ) from None
    return min(max(result, EARLIEST), LATEST)
