"""Response and request models of the REST API (camelCase JSON)."""

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
from pydantic.alias_generators import to_camel

from tickwork.alerts import job_health
from tickwork.redaction import redact_http_parameters, redact_json, redact_url
from tickwork.spec import Instant, check_json_value
from tickwork.store.models import HandlerType, Job, JobRun, MisfirePolicy, OverlapPolicy


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class JobOut(ApiModel):
    """A job definition as stored, with its schedule state."""

    id: int
    name: str
    cron_expression: str | None
    run_at: datetime | None
    timezone: str
    handler_type: str
    handler_data: str
    parameters: dict[str, Any] | None
    retry_count: int
    retry_backoff_seconds: int
    max_backoff_seconds: int
    timeout_seconds: float | None
    queue: str
    misfire_policy: str
    misfire_grace_seconds: float | None
    overlap_policy: str
    enabled: bool
    source: str
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime
    #: Alerts (issue 13).
    late_after_seconds: int | None = None
    pause_after_failures: int | None = None
    notify_url: str | None = None
    #: null, ``manual``, or ``auto: N consecutive dead runs``.
    paused_reason: str | None = None
    #: ``healthy``, ``late``, ``failing`` or ``paused`` (see docs/operations.md).
    health: str = "healthy"
    last_success_at: datetime | None = None

    @classmethod
    def of(
        cls,
        job: Job,
        *,
        masked: bool = False,
        health: str | None = None,
        last_success_at: datetime | None = None,
    ) -> JobOut:
        """``masked`` (a ``viewer``'s read): URL userinfo and credential-like header, query and
        JSON values replaced with ``***`` (:mod:`tickwork.redaction`)."""
        out = cls.model_validate(job)
        if health is None:  # without the run history: what the job row alone says
            health = job_health(
                enabled=out.enabled, late=getattr(job, "late_since", None) is not None, last_final_status=None
            ).value
        extra: dict[str, Any] = {"last_success_at": last_success_at, "health": health}
        if masked:
            extra.update(masked_definition(out.handler_type, out.handler_data, out.parameters))
            extra["notify_url"] = redact_url(out.notify_url) if out.notify_url else None
        return out.model_copy(update=extra)


def masked_definition(
    handler_type: str, handler_data: str, parameters: dict[str, Any] | None
) -> dict[str, Any]:
    """A job's ``handler_data`` and ``parameters`` as a ``viewer`` may read them."""
    if handler_type == HandlerType.HTTP.value:
        return {"handler_data": redact_url(handler_data), "parameters": redact_http_parameters(parameters)}
    return {"parameters": redact_json(parameters)}


class JobPage(ApiModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class RunOut(ApiModel):
    """One attempt of one fire of a job."""

    id: int
    job_id: int
    status: str
    attempt: int
    output: str | None
    #: The status code of an http job's response (null: no response, or a Python job).
    http_status: int | None
    created_at: datetime
    updated_at: datetime
    scheduled_for: datetime
    trigger: str
    worker_id: str | None
    message_id: str | None
    available_at: datetime | None
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    arguments: dict[str, Any] | None
    error: str | None
    traceback: str | None

    @classmethod
    def of(cls, run: JobRun, *, masked: bool = False) -> RunOut:
        """``masked``: credential-like keys of the call's ``arguments`` replaced with ``***``."""
        out = cls.model_validate(run)
        return out.model_copy(update={"arguments": redact_json(out.arguments)}) if masked else out


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


class PurgeRequest(ApiModel):
    """Body of ``POST /dlq/purge``: the dead runs to discard (absent or null: all of them)."""

    model_config = ConfigDict(extra="forbid")

    run_ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(default=None, max_length=10_000)


class PurgeResult(ApiModel):
    purged: int


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class NotificationOut(ApiModel):
    """One webhook notification (one event, one target) and how its delivery went."""

    id: int
    event: str
    job_id: int | None
    run_id: int | None
    target: str
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    #: The JSON body as POSTed (and signed).
    payload: str


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
    late_after_seconds: StrictInt | None = None
    pause_after_failures: StrictInt | None = None
    notify_url: str | None = None

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, by snake_case name."""
        return self.model_dump(exclude_unset=True, by_alias=False)
