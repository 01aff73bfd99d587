"""``/notifications``: the webhook outbox (issue 13): what was sent where, and how it went."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tickwork.alerts import Event
from tickwork.api.auth import Reader
from tickwork.api.ids import MAX_ID, PLAIN_DECIMAL
from tickwork.api.jobs import READ_ERRORS
from tickwork.api.schemas import NotificationOut, NotificationPage
from tickwork.api.state import State
from tickwork.redaction import redact_url
from tickwork.store.alerts import list_notifications
from tickwork.store.models import NotificationStatus

router = APIRouter(prefix="/notifications", tags=["notifications"])


@router.get("", response_model=NotificationPage, responses=READ_ERRORS, summary="List notifications")
def list_all(
    state: State,
    who: Reader,
    *,
    status: Annotated[NotificationStatus | None, Query(description="PENDING, DELIVERED or FAILED")] = None,
    event: Annotated[Event | None, Query()] = None,
    job_id: Annotated[int | None, PLAIN_DECIMAL, Query(alias="jobId", ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, PLAIN_DECIMAL, Query(alias="beforeId", ge=1, le=MAX_ID)] = None,
) -> NotificationPage:
    rows = list_notifications(
        state.engine,
        status=status.value if status else None,
        event=event.value if event else None,
        job_id=job_id,
        limit=limit,
        before_id=before_id,
    )
    items = [NotificationOut.model_validate(row._mapping) for row in rows]
    if who.masked:
        items = [item.model_copy(update={"target": redact_url(item.target)}) for item in items]
    return NotificationPage(items=items, next_before_id=items[-1].id if len(items) == limit else None)
