"""``/runs``: the run log (one row per attempt), newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from tickwork.api.auth import Reader
from tickwork.api.ids import MAX_ID, PLAIN_DECIMAL
from tickwork.api.jobs import ONE_JOB_ERRORS, READ_ERRORS, aware, run_page
from tickwork.api.schemas import RunOut, RunPage
from tickwork.api.state import State
from tickwork.store import runs as run_store
from tickwork.vocabulary import RunStatus

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("", response_model=RunPage, responses=READ_ERRORS, summary="Search the run log")
def list_runs(
    *,
    state: State,
    who: Reader,
    status: Annotated[list[RunStatus] | None, Query(description="one or more statuses")] = None,
    job_id: Annotated[int | None, PLAIN_DECIMAL, Query(alias="jobId", ge=1, le=MAX_ID)] = None,
    since: Annotated[datetime | None, Query(description="created at or after (naive = UTC)")] = None,
    until: Annotated[datetime | None, Query(description="created before (naive = UTC)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, PLAIN_DECIMAL, Query(alias="beforeId", ge=1, le=MAX_ID)] = None,
) -> RunPage:
    runs = run_store.list_runs(
        state.engine,
        job_id=job_id,
        status=[s.value for s in status] if status else None,
        since=aware(since, "since") if since is not None else None,
        until=aware(until, "until") if until is not None else None,
        limit=limit,
        before_id=before_id,
    )
    return run_page(runs, limit, masked=who.masked)


@router.get(
    "/{run_id}",
    response_model=RunOut,
    responses={**ONE_JOB_ERRORS, 404: {"model": ONE_JOB_ERRORS[404]["model"], "description": "no such run"}},
    summary="Get one attempt",
)
def get_run(
    run_id: Annotated[int, PLAIN_DECIMAL, Path(ge=1, le=MAX_ID)], state: State, who: Reader
) -> RunOut:
    return RunOut.of(run_store.get_run(state.engine, run_id), masked=who.masked)
