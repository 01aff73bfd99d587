"""What a job and a run look like to a reader: the API's JSON and the CLI's ``--json``.

Both the API and the CLI import these models from here (the CLI does not import the API).
Fields are camelCase in JSON; ``masked`` reads replace credentials with ``***``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from tickwork.alerts import job_health
from tickwork.redaction import redact_http_parameters, redact_json, redact_url
from tickwork.store.models import Event, Job, JobRun
from tickwork.vocabulary import HandlerType


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
    tags: list[str]
    max_concurrency: int | None
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

    @field_validator("tags", mode="before")
    @classmethod
    def _no_tags(cls, value: Any) -> Any:
        return [] if value is None else value  # rows written before tags existed

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


class EventOut(ApiModel):
    """One change: who (``actor``: a token's ``sub``, ``cli``, ``decorator``, ``tickwork``; ``role``
    for tokens), what (``kind``, the job and run), when, and ``details`` (for definition
    changes ``changes: {field: {before, after}}``)."""

    id: int
    created_at: datetime
    actor: str
    role: str | None
    kind: str
    job_id: int | None
    run_id: int | None
    details: dict[str, Any] | None

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls.model_validate(event)
