"""``/events`` and ``/jobs/{id}/events``: the audit trail, newest first (keyset on id)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from tickwork.api.auth import Reader
from tickwork.api.ids import MAX_ID, PLAIN_DECIMAL
from tickwork.api.jobs import READ_ERRORS
from tickwork.api.schemas import ApiModel
from tickwork.api.state import State
from tickwork.audit import masked_details
from tickwork.store import events as event_store
from tickwork.store.events import EventKind
from tickwork.views import EventOut

router = APIRouter(tags=["audit trail"])


class EventPage(ApiModel):
    """Newest first; pass ``nextBeforeId`` as ``beforeId`` for the next page (null: no more)."""

    items: list[EventOut]
    next_before_id: int | None


Kinds = Annotated[list[EventKind] | None, Query(alias="kind", description="one or more kinds")]
BeforeId = Annotated[int | None, PLAIN_DECIMAL, Query(alias="beforeId", ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=500)]


def _page(
    state: State, who: Reader, *, job_id: int | None, kinds: Any, before_id: int | None, limit: int
) -> EventPage:
    rows = event_store.list_events(
        state.engine,
        job_id=job_id,
        kinds=[k.value for k in kinds] if kinds else None,
        before_id=before_id,
        limit=limit,
    )
    items = [EventOut.of(e) for e in rows]
    if who.masked:  # a viewer reads credentials in the before/after values masked
        items = [
            out.model_copy(update={"details": masked_details(e)}) for out, e in zip(items, rows, strict=True)
        ]
    return EventPage(items=items, next_before_id=items[-1].id if len(items) == limit else None)


@router.get("/events", response_model=EventPage, responses=READ_ERRORS, summary="The audit trail")
def list_events(
    *,
    state: State,
    who: Reader,
    job_id: Annotated[int | None, PLAIN_DECIMAL, Query(alias="jobId", ge=1, le=MAX_ID)] = None,
    kind: Kinds = None,
    before_id: BeforeId = None,
    limit: Limit = 50,
) -> EventPage:
    return _page(state, who, job_id=job_id, kinds=kind, before_id=before_id, limit=limit)


@router.get(
    "/jobs/{job_id}/events",
    response_model=EventPage,
    responses=READ_ERRORS,
    summary="A job's audit trail (also after the job was deleted)",
)
def job_events(
    *,
    job_id: Annotated[int, PLAIN_DECIMAL, Path(ge=1, le=MAX_ID, description="job id")],
    state: State,
    who: Reader,
    kind: Kinds = None,
    before_id: BeforeId = None,
    limit: Limit = 50,
) -> EventPage:
    return _page(state, who, job_id=job_id, kinds=kind, before_id=before_id, limit=limit)
