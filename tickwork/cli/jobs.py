"""``tickwork jobs add|list|show|pause|resume|trigger|delete``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

import pydantic
from sqlalchemy import Engine

from tickwork import audit, operations
from tickwork import backfill as backfills
from tickwork.alerts import Health
from tickwork.cli.common import (
    LIMIT,
    MAX_ID,
    int_range,
    job_ref,
    migrated_engine,
    print_json,
    print_table,
    settings_and_logging,
)
from tickwork.config import Settings
from tickwork.errors import ValidationError
from tickwork.field_errors import first_error
from tickwork.messaging import make_broker
from tickwork.schedule.cron import CronSchedule, parse_run_at
from tickwork.scheduler.wake import wake_schedulers
from tickwork.spec import MAX_JSON_DEPTH, TAG_RE, JobSpec
from tickwork.store import jobs as job_store
from tickwork.store.alerts import JobHealth, health_of
from tickwork.store.models import Job
from tickwork.store.runs import get_run, insert_run, list_runs
from tickwork.views import JobOut, RunOut
from tickwork.vocabulary import RunTrigger, utcnow

#: JSON field → the flag that sets it, so a CLI error names what the user typed.
FLAGS = {
    "name": "--name",
    "cronExpression": "--cron",
    "runAt": "--run-at",
    "timezone": "--timezone",
    "handlerType": "--http/--python",
    "handlerData": "--http/--python",
    "parameters": "--parameters",
    "retryCount": "--retry-count",
    "retryBackoffSeconds": "--retry-backoff",
    "maxBackoffSeconds": "--max-backoff",
    "timeoutSeconds": "--timeout",
    "queue": "--queue",
    "misfirePolicy": "--misfire-policy",
    "misfireGraceSeconds": "--misfire-grace",
    "overlapPolicy": "--overlap-policy",
    "tags": "--tag",
    "maxConcurrency": "--max-concurrency",
    "lateAfterSeconds": "--late-after",
    "pauseAfterFailures": "--pause-after-failures",
    "notifyUrl": "--notify-url",
}


def register(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="job definitions")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    jobs_sub.required = True

    add = jobs_sub.add_parser("add", help="create a job")
    add.add_argument("--name", required=True)
    when = add.add_mutually_exclusive_group()
    when.add_argument("--cron", help="6-field (seconds first), 5-field or @macro")
    when.add_argument("--run-at", help="one-time ISO 8601 instant (naive = UTC)")
    add.add_argument("--timezone", default="UTC", help="IANA zone of the cron expression")
    handler = add.add_mutually_exclusive_group(required=True)
    handler.add_argument("--http", metavar="URL", help="call this http(s) URL")
    handler.add_argument("--python", metavar="NAME", help="run this registered @job function")
    add.add_argument("--parameters", metavar="JSON", help="http: method/headers/query/body/json")
    add.add_argument("--retry-count", type=int, default=0)
    add.add_argument("--retry-backoff", type=int, default=10, metavar="SECONDS")
    add.add_argument("--max-backoff", type=int, default=3600, metavar="SECONDS")
    add.add_argument("--timeout", type=float, metavar="SECONDS")
    add.add_argument("--queue", default="default")
    add.add_argument("--misfire-policy", default="fire_once", choices=["fire_once", "fire_all", "skip"])
    add.add_argument("--misfire-grace", type=float, metavar="SECONDS")
    add.add_argument("--overlap-policy", default="allow", choices=["allow", "forbid", "replace"])
    add.add_argument("--tag", action="append", default=[], help="a tag (repeat for more)")
    add.add_argument("--max-concurrency", type=int, metavar="N", help="at most N attempts running at once")
    add.add_argument(
        "--late-after",
        type=int,
        metavar="SECONDS",
        help="a fire not SUCCESS this long after its time is late",
    )
    add.add_argument(
        "--pause-after-failures", type=int, metavar="N", help="pause after N consecutive DEAD runs"
    )
    add.add_argument("--notify-url", metavar="URL", help="POST this job's notifications here too")
    add.add_argument("--paused", action="store_true", help="create it paused")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=cmd_add)

    ls = jobs_sub.add_parser("list", help="list jobs")
    state = ls.add_mutually_exclusive_group()
    state.add_argument("--enabled", dest="enabled", action="store_const", const=True, default=None)
    state.add_argument("--paused", dest="enabled", action="store_const", const=False)
    ls.add_argument("--name", help="name contains")
    ls.add_argument("--tag", type=tag_arg, help="jobs with this tag")
    ls.add_argument("--health", choices=[h.value for h in Health], help="only jobs in this health")
    ls.add_argument("--limit", type=LIMIT, default=100, help="1 to 10000 (default 100)")
    ls.add_argument("--offset", type=int_range(0, MAX_ID, "a row count"), default=0)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    fill = jobs_sub.add_parser("backfill", help="fire every scheduled time of a past range")
    fill.add_argument("job", type=job_ref, help="job id or name")
    fill.add_argument("--start", type=instant_arg, required=True, help="ISO 8601, inclusive (naive = UTC)")
    fill.add_argument(
        "--end", type=instant_arg, required=True, help="ISO 8601, exclusive, not later than now"
    )
    fill.add_argument("--json", action="store_true")
    fill.set_defaults(func=cmd_backfill)

    for action, helptext, func in (
        ("show", "show a job, its next fires and its latest runs", cmd_show),
        ("pause", "stop firing a job", cmd_pause),
        ("resume", "fire a paused job again", cmd_resume),
        ("trigger", "run a job now", cmd_trigger),
        ("delete", "delete a job and its run history", cmd_delete),
    ):
        p = jobs_sub.add_parser(action, help=helptext)
        p.add_argument("job", type=job_ref, help="job id or name")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
        if action == "trigger":
            p.add_argument(
                "--idempotency-key",
                metavar="KEY",
                help="a repeat with this key within 24 h answers the same run",
            )


def instant_arg(text: str) -> datetime:
    """An argparse ``type``: an ISO 8601 instant (naive = UTC)."""
    try:
        return parse_run_at(text)
    except (ValidationError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date-time") from None


def tag_arg(text: str) -> str:
    """An argparse ``type`` for ``jobs list --tag``: a tag as jobs spell them."""
    if not TAG_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a tag: 1-64 letters, digits and _ . : - (starting with a letter or digit)"
        )
    return text


def resolve_job(engine: Engine, ref: str) -> Job:
    """A job by id (digits) or by name."""
    if ref.isdigit():
        return job_store.get_job(engine, int(ref))
    return job_store.get_job_by_name(engine, ref)


def job_json(job: Job, health: JobHealth | None = None) -> dict[str, Any]:
    """The API's job document (``health`` absent: written as ``healthy``/no last success)."""
    return JobOut.of(
        job,
        health=health.health if health else None,
        last_success_at=health.last_success_at if health else None,
    ).model_dump(mode="json", by_alias=True)


def _spec_from_args(args: argparse.Namespace) -> JobSpec:
    data: dict[str, Any] = {
        "name": args.name,
        "timezone": args.timezone,
        "handlerType": "http" if args.http is not None else "python",
        "handlerData": args.http if args.http is not None else args.python,
        "retryCount": args.retry_count,
        "retryBackoffSeconds": args.retry_backoff,
        "maxBackoffSeconds": args.max_backoff,
        "queue": args.queue,
        "misfirePolicy": args.misfire_policy,
        "overlapPolicy": args.overlap_policy,
        "enabled": not args.paused,
        "tags": args.tag,
    }
    for key, value in (
        ("cronExpression", args.cron),
        ("runAt", args.run_at),
        ("timeoutSeconds", args.timeout),
        ("misfireGraceSeconds", args.misfire_grace),
        ("maxConcurrency", args.max_concurrency),
        ("lateAfterSeconds", args.late_after),
        ("pauseAfterFailures", args.pause_after_failures),
        ("notifyUrl", args.notify_url),
    ):
        if value is not None:
            data[key] = value
    if args.parameters is not None:
        try:
            data["parameters"] = json.loads(args.parameters)
        except json.JSONDecodeError as exc:
            raise ValidationError("--parameters", f"not valid JSON: {exc}") from None
        except RecursionError:  # json's parser recurses once per level
            raise ValidationError("--parameters", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError:  # Python refuses to convert integers this long
            raise ValidationError(
                "--parameters",
                f"not valid JSON: an integer has more than {sys.get_int_max_str_digits()} digits",
            ) from None
    try:
        return JobSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        error = first_error(exc.errors())
        raise ValidationError(_flag(error.field), error.reason) from None


def _flag(field: str) -> str:
    head = field.partition(".")[0]
    flag = FLAGS.get(head)
    return f"{flag} ({field})" if flag else field


def _check(settings: Settings, engine: Engine, spec: JobSpec) -> None:
    try:
        operations.check_spec(settings, engine, spec)
    except ValidationError as exc:
        raise ValidationError(_flag(exc.field), exc.reason) from None


def cmd_add(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    spec = _spec_from_args(args)  # bad input exits 2 before touching the database
    engine = migrated_engine(settings)
    _check(settings, engine, spec)
    job = job_store.create_job(engine, spec, source="cli")
    audit.job_created(engine, audit.CLI, job)
    wake_schedulers(settings, "created")
    if args.json:
        print_json(job_json(job))
    else:
        print(f"created job {job.id} {job.name!r}; next fire: {_when(job)}")
    return 0


def _when(job: Job) -> str:
    return job.next_fire_at.isoformat(timespec="seconds") if job.next_fire_at else "on demand"


def _schedule(job: Job) -> str:
    if job.cron_expression:
        zone = "" if job.timezone == "UTC" else f" ({job.timezone})"
        return f"{job.cron_expression}{zone}"
    if job.run_at is not None:
        return f"once at {job.run_at.isoformat(timespec='seconds')}"
    return "on demand"


def cmd_list(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    jobs, total = job_store.list_jobs(
        engine,
        enabled=args.enabled,
        name_contains=args.name,
        tag=args.tag,
        health=args.health,
        limit=args.limit,
        offset=args.offset,
    )
    healths = health_of(engine, [j.id for j in jobs])
    if args.json:
        print_json({"items": [job_json(j, healths.get(j.id)) for j in jobs], "total": total})
        return 0
    print_table(
        [
            (
                j.id,
                j.name,
                _schedule(j),
                f"{j.handler_type}:{j.handler_data}",
                "yes" if j.enabled else "paused",
                _health(healths.get(j.id), j),
                j.next_fire_at if j.enabled else None,
                ",".join(j.tags or []) or None,
            )
            for j in jobs
        ],
        ["id", "name", "schedule", "handler", "enabled", "health", "next fire", "tags"],
    )
    if total > len(jobs):
        print(f"({len(jobs)} of {total}; use --offset/--limit)")
    return 0


def _health(health: JobHealth | None, job: Job) -> str:
    """``late``, ``failing (last success …)``, ``paused (auto: …)``: the state and why."""
    if health is None:
        return "-"
    if health.health == "paused" and job.paused_reason:
        return f"paused ({job.paused_reason})"
    if health.health in ("late", "failing"):
        since = health.last_success_at.isoformat(timespec="seconds") if health.last_success_at else "never"
        return f"{health.health} (last success {since})"
    return health.health


def cmd_show(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    job = resolve_job(engine, args.job)
    fires = (
        CronSchedule(job.cron_expression, job.timezone).next_fires(utcnow(), 5) if job.cron_expression else []
    )
    runs = list_runs(engine, job_id=job.id, limit=10)
    health = health_of(engine, [job.id]).get(job.id)
    if args.json:
        print_json(
            {
                **job_json(job, health),
                "nextFires": [f.isoformat() for f in fires],
                "latestRuns": [RunOut.of(r).model_dump(mode="json", by_alias=True) for r in runs],
            }
        )
        return 0
    data = job_json(job, health)
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key.ljust(width)}  {'-' if value is None else value}")
    if fires:
        print("\nnext fires (UTC):")
        for fire in fires:
            print(f"  {fire.isoformat(timespec='seconds')}")
    if runs:
        print("\nlatest runs:")
        print_table(
            [(r.id, r.status, r.attempt, r.scheduled_for, r.finished_at, r.error) for r in runs],
            ["id", "status", "attempt", "scheduled for", "finished", "error"],
        )
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    return _set_enabled(args, False)


def cmd_resume(args: argparse.Namespace) -> int:
    return _set_enabled(args, True)


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    before = resolve_job(engine, args.job)
    job = job_store.set_enabled(engine, before.id, enabled)
    audit.job_enabled(engine, audit.CLI, job, was_enabled=before.enabled)
    wake_schedulers(settings, "resumed" if enabled else "paused")
    if args.json:
        print_json(job_json(job))
    else:
        print(f"job {job.id} {job.name!r} {'resumed' if enabled else 'paused'}")
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    if args.idempotency_key is not None:
        operations.check_idempotency_key(args.idempotency_key, "--idempotency-key")
    engine = migrated_engine(settings)
    job = resolve_job(engine, args.job)
    if args.idempotency_key is not None:
        broker = None if settings.embedded_broker else make_broker(settings)
        run_id, made = operations.trigger_once(settings, engine, broker, job, key=args.idempotency_key)
        if made:
            audit.job_triggered(engine, audit.CLI, job, run_id, key=args.idempotency_key)
        run = get_run(engine, run_id)
        if args.json:
            print_json(RunOut.of(run).model_dump(mode="json", by_alias=True))
        else:
            state = "made" if made else "already made by this key"
            print(f"run {run_id} of job {job.id} {job.name!r}: {state} ({run.status})")
        return 0
    if settings.embedded_broker:
        # The in-process broker lives in `tickwork dev`, not here: leave the PENDING row for its
        # outbox sweep (and its start-up republish) to pick up.
        now = utcnow()
        run_id = insert_run(engine, job_id=job.id, scheduled_for=now, trigger=RunTrigger.MANUAL, now=now)
        # This process cannot see whether a `tickwork dev` is running on the database: say both.
        note = (
            f"PENDING; a `tickwork dev` running on {settings.database_url} publishes it within"
            " seconds (none running: it runs when `tickwork dev` next starts)"
        )
    else:
        run_id = operations.trigger(settings, engine, make_broker(settings), job)
        note = "published"
    audit.job_triggered(engine, audit.CLI, job, run_id)
    run = get_run(engine, run_id)
    if run.enqueued_at is None and not settings.embedded_broker:
        note = "PENDING; publishing failed (see above), the scheduler's outbox sweep publishes it"
    if args.json:
        print_json(RunOut.of(run).model_dump(mode="json", by_alias=True))
    else:
        print(f"run {run_id} of job {job.id} {job.name!r}: {note}")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    job = resolve_job(engine, args.job)
    try:
        result = backfills.backfill(settings, engine, job, args.start, args.end)
    except ValidationError as exc:
        raise ValidationError(_BACKFILL_FLAGS.get(exc.field, exc.field), exc.reason) from None
    details = {
        "start": args.start.isoformat(),
        "end": args.end.isoformat(),
        "fires": result.fires,
        "skippedExisting": result.skipped_existing,
    }
    audit.job_backfilled(engine, audit.CLI, job, details)
    if args.json:
        print_json({"fires": result.fires, "skippedExisting": result.skipped_existing})
    else:
        print(
            f"job {job.id} {job.name!r}: {result.fires} fire(s) written, {result.skipped_existing} "
            "already existed; the scheduler publishes them at TICKWORK_BACKFILL_FIRES_PER_SECOND"
        )
    return 0


_BACKFILL_FLAGS = {"start": "--start", "end": "--end", "overlapPolicy": "--overlap-policy (overlapPolicy)"}


def cmd_delete(args: argparse.Namespace) -> int:
    settings = settings_and_logging(one_shot=True)
    engine = migrated_engine(settings)
    job = resolve_job(engine, args.job)
    job_store.delete_job(engine, job.id)
    audit.job_deleted(engine, audit.CLI, job)
    if args.json:
        print_json({"deleted": job.id})
    else:
        print(f"deleted job {job.id} {job.name!r} and its run history")
    return 0
