"""tickwork.lifecycle: the retry-or-dead decision (pure) and its records, on SQLite and Dramatiq's
in-memory broker (the embedded mode; the distributed guarantees are tested on the real services
in tests/integration/test_worker.py and tests/chaos)."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine

from tickwork import lifecycle
from tickwork.config import Settings, load_settings
from tickwork.lifecycle import Dead, FailedAttempt, Failure, Retry, next_step, settle_failure
from tickwork.messaging import build_message, queue_name
from tickwork.spec import JobSpec
from tickwork.store.jobs import create_job
from tickwork.store.models import Job
from tickwork.store.runs import attempts_of, claim_attempt, get_run, insert_run
from tickwork.vocabulary import RunStatus, RunTrigger, utcnow

pytestmark = pytest.mark.unit


def test_next_step_retries_while_attempt_is_within_retry_count() -> None:
    steps = [next_step(n, 2, 10, 3600, jitter=0) for n in (1, 2, 3, 4)]
    assert steps == [Retry(next_attempt=2, delay=10.0), Retry(next_attempt=3, delay=20.0), Dead(), Dead()]


def test_next_step_with_no_retries_is_dead_at_once() -> None:
    assert next_step(1, 0, 10, 3600) == Dead()


def test_next_step_delay_is_capped_and_jittered_upwards() -> None:
    step = next_step(20, 30, 10, 60, jitter=0.1, rng=random.Random(7))
    assert isinstance(step, Retry)
    assert 60 <= step.delay <= 66


@pytest.fixture
def embedded(sqlite_engine: Engine) -> tuple[Settings, StubBroker, Job]:
    settings = load_settings(database_url=str(sqlite_engine.url), namespace="lifecycle")
    broker = StubBroker()
    spec = JobSpec(
        name="flaky", cron_expression="* * * * * *", handler_type="python", handler_data="x", retry_count=1
    )
    return settings, broker, create_job(sqlite_engine, spec)


def running(engine: Engine, job: Job, attempt: int = 1) -> FailedAttempt:
    scheduled_for = utcnow().replace(microsecond=0)
    run_id = insert_run(engine, job_id=job.id, scheduled_for=scheduled_for, attempt=attempt)
    assert claim_attempt(engine, run_id, "w1")
    return FailedAttempt(
        run_id=run_id,
        worker_id="w1",
        job_id=job.id,
        job_name=job.name,
        attempt=attempt,
        scheduled_for=scheduled_for,
        retry_count=job.retry_count,
        retry_backoff_seconds=job.retry_backoff_seconds,
        max_backoff_seconds=job.max_backoff_seconds,
        arguments={"args": [1], "kwargs": {}},
        actor_name="x",
        queue_name="lifecycle.default",
    )


def message_for(settings: Settings, job: Job, failed: FailedAttempt) -> Any:
    def build(new_id: int, step: Retry) -> dramatiq.Message[Any]:
        return build_message(
            settings,
            job,
            run_id=new_id,
            attempt=step.next_attempt,
            scheduled_for=failed.scheduled_for,
            trigger=RunTrigger.RETRY.value,
        )

    return build


def test_a_failure_with_retries_left_is_failed_and_retried_in_one_step(
    embedded: tuple[Settings, StubBroker, Job], sqlite_engine: Engine
) -> None:
    settings, broker, job = embedded
    failed = running(sqlite_engine, job)
    settled = settle_failure(
        settings,
        sqlite_engine,
        broker,
        failed,
        Failure(error="boom"),
        next_message=message_for(settings, job, failed),
    )
    assert settled.recorded and isinstance(settled.step, Retry) and settled.retry_run_id is not None
    rows = attempts_of(sqlite_engine, job.id, failed.scheduled_for)
    assert [(r.attempt, r.status, r.error) for r in rows] == [
        (1, RunStatus.FAILED.value, "boom"),
        (2, RunStatus.PENDING.value, None),
    ]
    retry = rows[1]
    assert retry.id == settled.retry_run_id and retry.trigger == RunTrigger.RETRY.value
    assert retry.arguments == {"args": [1], "kwargs": {}}
    assert retry.available_at >= rows[0].finished_at + timedelta(seconds=job.retry_backoff_seconds)
    # Published after the commit (delayed, so on the in-memory broker's delay queue) and marked.
    assert retry.enqueued_at is not None
    assert broker.queues[queue_name(settings, "default") + ".DQ"].qsize() == 1


def test_a_failure_with_retries_spent_is_dead(
    embedded: tuple[Settings, StubBroker, Job], sqlite_engine: Engine
) -> None:
    settings, broker, job = embedded
    failed = running(sqlite_engine, job, attempt=2)
    settled = settle_failure(
        settings,
        sqlite_engine,
        broker,
        failed,
        Failure(error="boom"),
        next_message=message_for(settings, job, failed),
    )
    assert settled.recorded and settled.step == Dead() and settled.retry_run_id is None
    assert get_run(sqlite_engine, failed.run_id).status == RunStatus.DEAD.value
    assert len(attempts_of(sqlite_engine, job.id, failed.scheduled_for)) == 1


def test_a_retry_without_a_message_builder_is_refused_before_any_write(
    embedded: tuple[Settings, StubBroker, Job], sqlite_engine: Engine
) -> None:
    """``next_message`` may be left out only with ``step=Dead()``: a retry needs it, and finds out
    before it writes anything (the attempt stays RUNNING for the reaper)."""
    settings, broker, job = embedded
    failed = running(sqlite_engine, job)
    with pytest.raises(ValueError, match="next_message"):
        settle_failure(settings, sqlite_engine, broker, failed, Failure(error="boom"))
    assert get_run(sqlite_engine, failed.run_id).status == RunStatus.RUNNING.value
    assert len(attempts_of(sqlite_engine, job.id, failed.scheduled_for)) == 1


def test_an_attempt_settled_by_someone_else_is_not_settled_again(
    embedded: tuple[Settings, StubBroker, Job], sqlite_engine: Engine
) -> None:
    settings, broker, job = embedded
    failed = running(sqlite_engine, job)
    build = message_for(settings, job, failed)
    assert settle_failure(
        settings, sqlite_engine, broker, failed, Failure(error="first"), next_message=build
    ).recorded
    again = settle_failure(
        settings, sqlite_engine, broker, failed, Failure(error="second"), next_message=build
    )
    assert not again.recorded
    assert len(attempts_of(sqlite_engine, job.id, failed.scheduled_for)) == 2


def test_a_failed_publish_leaves_the_committed_row_for_the_outbox(
    embedded: tuple[Settings, StubBroker, Job], sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, broker, job = embedded

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(lifecycle, "publish_batch", broken)
    run_id = lifecycle.fire_now(settings, sqlite_engine, broker, job)
    run = get_run(sqlite_engine, run_id)
    assert (run.status, run.enqueued_at) == (RunStatus.PENDING.value, None)
