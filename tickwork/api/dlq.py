"""``/dlq``: runs whose retries are spent (status DEAD), with their reason; replay and purge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, status
from starlette.concurrency import run_in_threadpool

from tickwork import audit as audit_trail
from tickwork import operations
from tickwork.api.auth import Principal, Reader, Writer
from tickwork.api.ids import MAX_ID, PLAIN_DECIMAL
from tickwork.api.jobs import READ_ERRORS, actor, log_write, run_page
from tickwork.api.schemas import ErrorBody, PurgeRequest, PurgeResult, RunOut, RunPage
from tickwork.api.state import State
from tickwork.store import runs as run_store

router = APIRouter(prefix="/dlq", tags=["dead-letter queue"])

RUN_ERRORS = {**READ_ERRORS, 404: {"model": ErrorBody, "description": "no such run"}}


@router.get("", response_model=RunPage, responses=READ_ERRORS, summary="List dead runs")
def list_dead(
    state: State,
    who: Reader,
    *,
    job_id: Annotated[int | None, PLAIN_DECIMAL, Query(alias="jobId", ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, PLAIN_DECIMAL, Query(alias="beforeId", ge=1, le=MAX_ID)] = None,
) -> RunPage:
    dead = operations.list_dead(state.engine, job_id=job_id, limit=limit, before_id=before_id)
    return run_page(dead, limit, masked=who.masked)


@router.post(
    "/{run_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunOut,
    responses={**RUN_ERRORS, 409: {"model": ErrorBody, "description": "the run is not DEAD"}},
    summary="Replay a dead run as a new attempt",
)
async def replay(
    run_id: Annotated[int, PLAIN_DECIMAL, Path(ge=1, le=MAX_ID)], state: State, who: Writer
) -> RunOut:
    broker = await run_in_threadpool(state.get_broker)
    new_id = await run_in_threadpool(operations.replay, state.settings, state.engine, broker, run_id)
    run = RunOut.of(await run_in_threadpool(run_store.get_run, state.engine, new_id))
    await run_in_threadpool(
        lambda: audit_trail.run_replayed(
            state.engine, actor(who), job_id=run.job_id, dead_run_id=run_id, new_run_id=new_id
        )
    )
    log_write(f"dead run {run_id} replayed", who, job_id=run.job_id, run_id=new_id)
    return run


@router.post(
    "/purge",
    response_model=PurgeResult,
    responses={
        **RUN_ERRORS,
        409: {"model": ErrorBody, "description": "a named run is not DEAD (nothing is discarded)"},
    },
    summary="Discard dead runs",
    description=(
        "Discards the named dead runs, all or nothing: an unknown run id answers 404 and a run "
        "that is not DEAD 409, each named, and nothing changes. Without ``runIds``: every dead run."
    ),
)
async def purge(
    state: State,
    who: Writer,
    body: Annotated[PurgeRequest | None, Body()] = None,
) -> PurgeResult:
    run_ids = body.run_ids if body is not None else None
    return await _purge(state, who, run_ids)


@router.delete("", response_model=PurgeResult, responses=READ_ERRORS, summary="Discard every dead run")
async def purge_all(state: State, who: Writer) -> PurgeResult:
    return await _purge(state, who, None)


async def _purge(state: State, who: Principal, run_ids: list[int] | None) -> PurgeResult:
    broker = await run_in_threadpool(state.get_broker)
    purged = await run_in_threadpool(operations.purge, state.settings, state.engine, broker, run_ids)
    await run_in_threadpool(audit_trail.runs_purged, state.engine, actor(who), run_ids, purged)
    which = "all dead runs" if run_ids is None else f"{len(run_ids)} dead run id(s)"
    log_write(f"dlq purged: {purged} of {which}", who)
    return PurgeResult(purged=purged)
