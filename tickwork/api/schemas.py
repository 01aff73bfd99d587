"""Response and request models of the REST API (camelCase JSON); a job and a run as read are
:mod:`tickwork.views` (shared with the CLI), re-exported here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from tickwork.errors import ValidationError
from tickwork.schedule.cron import parse_run_at
from tickwork.spec import Instant, check_json_value
from tickwork.views import ApiModel, JobOut, NotificationOut, RunOut, masked_definition
from tickwork.vocabulary import HandlerType, MisfirePolicy, OverlapPolicy

__all__ = [
    "ApiModel",
    "BackfillRequest",
    "BackfillResult",
    "ErrorBody",
    "FieldError",
    "Health",
    "JobOut",
    "JobPage",
    "JobPatch",
    "NextFires",
    "NotificationOut",
    "PurgeRequest",
    "PurgeResult",
    "RunOut",
    "RunPage",
    "TriggerRequest",
    "ValidationErrorBody",
    "masked_definition",
]


class JobPage(ApiModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class RunPage(ApiModel):
    """Newest first; pass ``nextBeforeId`` as ``beforeId`` for the next page (null: no more)."""

    items: list[RunOut]
    next_before_id: int | None


class NextFires(ApiModel):
    job_id: int
    timezone: str
    fires: list[datetime]


class TriggerRequest(ApiModel):
    """Optional body of ``POST /jobs/{id}/trigger``: arguments for a Python job's call."""

    model_config = ConfigDict(extra="forbid")

    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    @field_validator("args", "kwargs")
    @classmethod
    def _json(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            check_json_value(value, str(info.field_name))
        return value


class BackfillRequest(ApiModel):
    """Body of ``POST /jobs/{id}/backfill``: ISO 8601 instants (naive = UTC); ``end`` is exclusive."""

    model_config = ConfigDict(extra="forbid")

    start: Instant
    end: Instant

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime, info: ValidationInfo) -> datetime:
        try:
            return parse_run_at(value, str(info.field_name))
        except OverflowError:
            raise ValidationError(
                str(info.field_name), "outside the range of representable UTC instants"
            ) from None


class BackfillResult(ApiModel):
    """What a backfill wrote: ``fires`` new runs, ``skippedExisting`` times that already had one."""

    fires: int
    skipped_existing: int


class PurgeRequest(ApiModel):
    """Body of ``POST /dlq/purge``: the dead runs to discard (absent or null: all of them)."""

    model_config = ConfigDict(extra="forbid")

    run_ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(default=None, max_length=10_000)


class PurgeResult(ApiModel):
    purged: int


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class NotificationPage(ApiModel):
    """Newest first; pass ``nextBeforeId`` as ``beforeId`` for the next page (null: no more)."""

    items: list[NotificationOut]
    next_before_id: int | None


class FieldError(BaseModel):
    """One invalid input: ``field`` is the JSON field, query parameter or header; ``reason`` why."""

    field: str
    reason: str
    loc: list[str | int] = Field(default_factory=list)
    msg: str = ""
    type: str = "value_error"


class ValidationErrorBody(BaseModel):
    detail: list[FieldError]


class ErrorBody(BaseModel):
    detail: str


class JobPatch(ApiModel):
    """Fields of a job to change; absent fields keep their value (``null`` clears a nullable one)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = None
    cron_expression: str | None = None
    run_at: Instant | None = None
    timezone: str | None = None
    handler_type: HandlerType | None = None
    handler_data: str | None = None
    parameters: dict[str, Any] | None = None
    retry_count: StrictInt | None = None
    retry_backoff_seconds: StrictInt | None = None
    max_backoff_seconds: StrictInt | None = None
    timeout_seconds: StrictFloat | None = None
    queue: str | None = None
    misfire_policy: MisfirePolicy | None = None
    misfire_grace_seconds: StrictFloat | None = None
    overlap_policy: OverlapPolicy | None = None
    enabled: StrictBool | None = None
    tags: list[str] | None = None
    max_concurrency: StrictInt | None = None
    late_after_seconds: StrictInt | None = None
    pause_after_failures: StrictInt | None = None
    notify_url: str | None = None

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, by snake_case name."""
        return self.model_dump(exclude_unset=True, by_alias=False)
