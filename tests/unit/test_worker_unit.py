"""Worker logic without services: backoff math, the run log on StubBroker + SQLite, the decorator."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from tickwork.actors.http import _resolve_checked
from tickwork.cli import main
from tickwork.config import Settings, load_settings
from tickwork.errors import ValidationError
from tickwork.messaging import OPTION, build_message
from tickwork.middleware.attempt import JobFailed, format_output, truncate_utf8
from tickwork.middleware.backoff import backoff_delay, has_retries_left
from tickwork.middleware.heartbeat import HeartbeatStore, current_worker_id, reap_lost_attempts
from tickwork.store.jobs import get_job_by_name
from tickwork.store.models import RunStatus, utcnow
from tickwork.store.runs import claim_attempt, get_run, insert_run
from tickwork.worker import setup_broker, start_worker

pytestmark = pytest.mark.unit


@given(
    attempt=st.integers(min_value=1, max_value=200),
    backoff=st.integers(min_value=0, max_value=86400),
    max_backoff=st.integers(min_value=0, max_value=7 * 86400),
    jitter=st.floats(min_value=0, max_value=1),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_delay_bounds(attempt: int, backoff: int, max_backoff: int, jitter: float, seed: int) -> None:
    delay = backoff_delay(attempt, backoff, max_backoff, jitter=jitter, rng=random.Random(seed))
    base = min(max_backoff, backoff * 2 ** (attempt - 1))
    assert delay >= 0
    assert base <= delay <= base * (1 + jitter) + 1e-9


def test_backoff_delay_doubles_then_caps() -> None:
    no_jitter = [backoff_delay(n, 1, 10, jitter=0) for n in range(1, 7)]
    assert no_jitter == [1, 2, 4, 8, 10, 10]


def test_retries_left_counts_attempts() -> None:
    opts: Any = {"attempt": 1, "retry_count": 3}
    assert [has_retries_left({**opts, "attempt": n}) for n in (1, 2, 3, 4, 5)] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_output_formatting_truncates_on_utf8_boundaries() -> None:
    assert truncate_utf8("héllo", 2) == "h"
    assert format_output({"a": 1}, 100) == '{"a": 1}'
    assert format_output(None, 100) is None
    assert format_output("x" * 1000, 256) == "x" * 256


def test_job_decorator_validates_at_import() -> None:
    from tickwork import job

    with pytest.raises(ValidationError) as err:

        @job(cron="not a cron", name="unit-bad-cron")
        def bad() -> None: ...

    assert "cron" in err.value.field
    with pytest.raises(ValidationError):

        @job(retries=-1, name="unit-bad-retries")
        def bad2() -> None: ...


def test_decorated_function_stays_callable() -> None:
    from tests import worker_jobs

    assert worker_jobs.tw_add(2, 3) == 5
    assert asyncio.run(worker_jobs.tw_async_sleep.fn(0)) == "slept"
    assert worker_jobs.tw_add.actor_name == "tw_add" and worker_jobs.tw_async_sleep.is_async


def test_resolved_address_in_deny_list_fails() -> None:
    with pytest.raises(JobFailed, match="denied: localhost resolves to address"):
        asyncio.run(_resolve_checked("localhost", 80, ["127.0.0.0/8", "::1/128"]))
    assert asyncio.run(_resolve_checked("127.0.0.1", 80, ["169.254.0.0/16"])) == "127.0.0.1"
    # An IPv4-mapped IPv6 literal reaches the IPv4 host: the IPv4 deny list applies to it.
    with pytest.raises(JobFailed, match="denied"):
        asyncio.run(_resolve_checked("[::ffff:127.0.0.1]", 80, ["127.0.0.0/8"]))


def test_worker_command_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--processes", "0"]) == 2
    assert "--processes" in capsys.readouterr().err
    assert main(["worker", "--queues", "bad queue!"]) == 2


@pytest.fixture
def embedded(sqlite_engine: Engine, tmp_path: Path) -> Iterator[tuple[Settings, StubBroker]]:
    url = str(sqlite_engine.url)
    settings = load_settings(database_url=url, imports=["tests.worker_jobs"], namespace="unit")
    broker = setup_broker(settings, engine=sqlite_engine)
    assert isinstance(broker, StubBroker)
    yield settings, broker
    broker.close()


def test_embedded_worker_claims_once_and_records_outcomes(
    embedded: tuple[Settings, StubBroker], sqlite_engine: Engine, tmp_path: Path
) -> None:
    from tests import worker_jobs

    settings, broker = embedded
    marker = tmp_path / "ran.txt"
    run_id = worker_jobs.tw_record.send(str(marker), "once")
    job = get_job_by_name(sqlite_engine, "tw_record")
    run = get_run(sqlite_engine, run_id)
    duplicate = build_message(
        settings, job, run_id=run_id, attempt=1, scheduled_for=run.scheduled_for, arguments=run.arguments
    )
    broker.enqueue(duplicate)
    broker.enqueue(duplicate)
    add_run = worker_jobs.tw_add.send(20, 22)
    handle = start_worker(settings, broker, threads=2)
    try:
        broker.join(f"{settings.namespace}.default", timeout=10_000)
        handle.join()
    finally:
        handle.stop(5)
    assert len(marker.read_text().splitlines()) == 1
    done = get_run(sqlite_engine, run_id)
    assert (
        done.status == RunStatus.SUCCESS and done.output == "once" and done.worker_id == current_worker_id()
    )
    assert get_run(sqlite_engine, add_run).output == "42"


def test_plain_dramatiq_messages_pass_through(embedded: tuple[Settings, StubBroker]) -> None:
    settings, broker = embedded
    seen: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=f"{settings.namespace}.plain")
    def plain(x: int) -> None:
        seen.append(x)

    plain.send(7)
    handle = start_worker(settings, broker, threads=1)
    try:
        broker.join(f"{settings.namespace}.plain", timeout=10_000)
        handle.join()
    finally:
        handle.stop(5)
    assert seen == [7]


def test_reaper_fails_attempts_of_dead_workers_in_process(
    embedded: tuple[Settings, StubBroker], sqlite_engine: Engine
) -> None:
    from tests import worker_jobs

    settings, broker = embedded
    store = HeartbeatStore(namespace="unit-reaper", ttl_seconds=0.2)
    job = get_job_by_name(sqlite_engine, "tw_long")  # retries=2
    now = utcnow()
    run_id = insert_run(sqlite_engine, job_id=job.id, scheduled_for=now, arguments={"args": ["/dev/null", 0]})
    store.beat("w-alive")
    store.beat("w-dead")
    assert claim_attempt(sqlite_engine, run_id, "w-dead")
    assert reap_lost_attempts(settings, sqlite_engine, broker, store) == 0  # still beating
    time.sleep(0.3)
    store.beat("w-alive")
    assert [w["worker_id"] for w in store.alive_workers()] == ["w-alive"]
    assert store.is_alive("w-alive") and not store.is_alive("w-dead")
    assert reap_lost_attempts(settings, sqlite_engine, broker, store) == 1
    assert reap_lost_attempts(settings, sqlite_engine, broker, store) == 0  # compare-and-set: once
    lost = get_run(sqlite_engine, run_id)
    assert lost.status == RunStatus.FAILED and lost.error == "worker lost"
    (message,) = list(broker.queues[f"{settings.namespace}.slow.DQ"].queue)
    decoded = dramatiq.Message.decode(message)
    assert decoded.options[OPTION]["attempt"] == 2
    assert get_run(sqlite_engine, decoded.options[OPTION]["run_id"]).status == RunStatus.PENDING
    assert worker_jobs.tw_long.queue == "slow"


def test_reaper_stops_between_attempts_when_told(
    embedded: tuple[Settings, StubBroker], sqlite_engine: Engine
) -> None:
    """A stopping scheduler's sweep ends after the attempt in hand; the rest stay RUNNING for
    the next sweep (the next leader's)."""
    settings, broker = embedded
    store = HeartbeatStore(namespace="unit-reaper-stop", ttl_seconds=0.2)
    job = get_job_by_name(sqlite_engine, "tw_long")
    run_ids = [
        insert_run(sqlite_engine, job_id=job.id, scheduled_for=utcnow(), arguments={"args": ["/dev/null", 0]})
        for _ in range(3)
    ]
    store.beat("w-gone")
    for run_id in run_ids:
        assert claim_attempt(sqlite_engine, run_id, "w-gone")
    time.sleep(0.3)  # w-gone's heartbeat expires (the store's own TTL, no other condition)
    store.beat("w-alive")
    asked: list[int] = []

    def keep_going() -> bool:
        asked.append(1)
        return len(asked) <= 2  # the worker loop's check and the first attempt's

    assert reap_lost_attempts(settings, sqlite_engine, broker, store, keep_going=keep_going) == 1
    statuses = sorted(get_run(sqlite_engine, run_id).status for run_id in run_ids)
    assert statuses == [RunStatus.FAILED, RunStatus.RUNNING, RunStatus.RUNNING]
    assert reap_lost_attempts(settings, sqlite_engine, broker, store) == 2  # the next sweep
    assert all(get_run(sqlite_engine, run_id).status == RunStatus.FAILED for run_id in run_ids)


def test_message_for_unknown_actor_is_recorded_dead(
    embedded: tuple[Settings, StubBroker], sqlite_engine: Engine
) -> None:
    from tickwork.spec import JobSpec
    from tickwork.store.jobs import create_job, get_job

    settings, broker = embedded
    job = create_job(
        sqlite_engine,
        JobSpec(
            name="api-unknown",
            handler_type="python",
            handler_data="not_imported_here",
            pause_after_failures=1,
        ),
    )
    run_id = insert_run(sqlite_engine, job_id=job.id, scheduled_for=utcnow())
    broker.enqueue(build_message(settings, job, run_id=run_id, attempt=1, scheduled_for=utcnow()))
    handle = start_worker(settings, broker, threads=1)
    try:
        broker.join(f"{settings.namespace}.default", timeout=10_000, fail_fast=False)
        handle.join()
    finally:
        handle.stop(5)
    run = get_run(sqlite_engine, run_id)
    assert run.status == RunStatus.DEAD
    assert (run.error or "").startswith("unknown handler: no @job function named 'not_imported_here'")
    # Settled as every dead run is: it counts toward pauseAfterFailures (issue 13).
    paused = get_job(sqlite_engine, job.id)
    assert not paused.enabled and (paused.paused_reason or "").startswith("auto: 1 consecutive dead run")


def test_recorder_commits_each_group_in_run_id_order(sqlite_engine: Engine) -> None:
    """Each group locks its rows in id order, like every multi-row UPDATE on job_runs, so two
    groups (or a group and the scheduler's publish-time update) cannot deadlock."""
    from tickwork.store.recorder import CLAIM, AttemptRecorder, _Pending

    recorder = AttemptRecorder(sqlite_engine)
    committed: list[list[int]] = []
    recorder._commit = lambda batch: committed.append([p.run_id for p in batch])  # type: ignore[method-assign]
    for run_id in (42, 7, 19, 3):
        recorder._waiting.append(_Pending(CLAIM, run_id, "w1"))
    assert recorder._lead_lock.acquire(blocking=False)
    recorder._lead()
    assert committed == [[3, 7, 19, 42]]
    assert not recorder._lead_lock.locked()  # nobody left waiting: the lead is given up


def test_recorder_hands_the_lead_to_the_first_caller_still_waiting(sqlite_engine: Engine) -> None:
    """After its group, a leader wakes the first caller that queued meanwhile as the next
    leader (the lead lock stays held); a caller interrupted while it waited is passed over, its
    claim left uncommitted."""
    from tickwork.store.recorder import CLAIM, AttemptRecorder, _Pending

    recorder = AttemptRecorder(sqlite_engine)
    committed: list[list[int]] = []
    recorder._commit = lambda batch: committed.append([p.run_id for p in batch])  # type: ignore[method-assign]
    gone, next_leader, after = _Pending(CLAIM, 1, "w1"), _Pending(CLAIM, 2, "w1"), _Pending(CLAIM, 3, "w1")
    gone.abandoned = True
    assert recorder._lead_lock.acquire(blocking=False)
    recorder._waiting.append(_Pending(CLAIM, 9, "w1"))
    recorder._lead()  # commits run 9; nobody else waits
    assert committed == [[9]] and not recorder._lead_lock.locked()

    assert recorder._lead_lock.acquire(blocking=False)
    for p in (gone, next_leader, after):
        recorder._waiting.append(p)
    recorder._pass_on()
    assert next_leader.lead and next_leader.done.acquire(blocking=False)  # woken to lead
    assert not after.lead and not after.done.acquire(blocking=False)  # still waiting
    assert recorder._lead_lock.locked()  # held for the next leader
    assert list(recorder._waiting) == [next_leader, after]  # the interrupted caller is dropped
    next_leader.lead = False
    recorder._lead()  # what the woken caller does
    assert committed[-1] == [2, 3] and not recorder._lead_lock.locked()


def test_an_interrupted_leader_answers_its_group_and_passes_the_lead_on(sqlite_engine: Engine) -> None:
    """An exception raised into a leading thread mid-commit (none is raised there in a worker)
    answers every caller of its group with an error instead of leaving them waiting, and the
    lead goes to the next caller."""
    from tickwork.store.recorder import CLAIM, AttemptRecorder, RecorderInterrupted, _Pending, _settle

    recorder = AttemptRecorder(sqlite_engine)
    group = [_Pending(CLAIM, run_id, "w1") for run_id in (1, 2, 3)]
    later = _Pending(CLAIM, 4, "w1")

    def interrupted(batch: list[_Pending]) -> None:
        batch[0].result = True
        _settle(batch[0])
        recorder._waiting.append(later)  # queued while the group commits
        raise KeyboardInterrupt

    recorder._commit = interrupted  # type: ignore[method-assign]
    recorder._waiting.extend(group)
    assert recorder._lead_lock.acquire(blocking=False)
    with pytest.raises(KeyboardInterrupt):
        recorder._lead()
    assert all(p.done.acquire(blocking=False) for p in group)  # every caller answered
    assert group[0].result is True and group[0].error is None
    assert all(isinstance(p.error, RecorderInterrupted) for p in group[1:])
    assert later.lead and later.done.acquire(blocking=False) and recorder._lead_lock.locked()


def test_send_keeps_the_run_when_the_publish_fails(
    embedded: tuple[Settings, StubBroker], sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row is committed before the publish: raising then would make a retrying caller run
    the job twice, so send returns the run id and the outbox sweep publishes it."""
    from tests import worker_jobs
    from tickwork import lifecycle

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(lifecycle, "publish_batch", broken)
    run_id = worker_jobs.tw_add.send(1, 2)
    run = get_run(sqlite_engine, run_id)
    assert (run.status, run.enqueued_at, run.arguments) == (
        RunStatus.PENDING,
        None,
        {"args": [1, 2], "kwargs": {}},
    )


def test_send_refuses_oversize_arguments_and_writes_nothing(
    embedded: tuple[Settings, StubBroker], sqlite_engine: Engine
) -> None:
    from sqlalchemy import func, select

    from tests import worker_jobs
    from tickwork.store.models import runs_table

    settings, _ = embedded
    with pytest.raises(ValidationError) as info:
        worker_jobs.tw_record.send("x" * (settings.max_payload_bytes + 1))
    assert info.value.field == "arguments" and "TICKWORK_MAX_PAYLOAD_BYTES" in info.value.reason
    with sqlite_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(runs_table)) == 0


def test_a_success_settled_on_another_threads_group_logs_with_its_own_ids(sqlite_engine: Engine) -> None:
    """A success's outcome is committed by whichever thread leads the next group, inside that
    thread's own log context (another attempt's ids): its warning still names its own run, and
    nothing of the leader's message."""
    import logging
    from datetime import UTC, datetime

    from tests.conftest import SEED
    from tickwork.config.logging import bind_log_context, record_fields, reset_log_context
    from tickwork.middleware.attempt import ClaimedAttempt
    from tickwork.middleware.run_log import RunLog
    from tickwork.spec import JobSpec
    from tickwork.store.jobs import create_job

    class Fields(logging.Handler):
        """The context fields of each record as a formatter sees them: when it is emitted."""

        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.seen: list[tuple[str, dict[str, Any]]] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.seen.append((record.getMessage(), record_fields(record)))

    job = create_job(sqlite_engine, JobSpec.model_validate(SEED))
    reaped, other = (
        insert_run(sqlite_engine, job_id=job.id, scheduled_for=datetime(2026, 1, 1, 12, i, tzinfo=UTC))
        for i in (0, 1)
    )
    run_log = RunLog(engine=sqlite_engine, worker_id=lambda: "w1")
    recorder = run_log.recorder
    handler = Fields()
    run_log.logger.addHandler(handler)
    try:
        assert recorder.claim(reaped, "w1")
        with sqlite_engine.begin() as conn:  # the reaper took it meanwhile
            conn.exec_driver_sql(f"UPDATE job_runs SET status = 'FAILED' WHERE id = {reaped}")
        options: Any = {"run_id": reaped, "job_id": job.id, "job_name": job.name, "attempt": 1}
        attempt = ClaimedAttempt(options=options, worker_id="w1", is_http=False)
        token = bind_log_context(run_id=999_999, job_name="someone-else", attempt=7, message_id="not-its-own")
        try:
            run_log._finish_later(attempt, {"status": RunStatus.SUCCESS, "output": None, "http_status": None})
            assert recorder.claim(other, "w1")  # this thread leads: the outcome goes in its group
        finally:
            reset_log_context(token)
        assert run_log.flush(timeout=10)
    finally:
        run_log.logger.removeHandler(handler)
        recorder.close()
    [fields] = [fields for message, fields in handler.seen if "no longer RUNNING" in message]
    assert fields == {
        "job_id": job.id,
        "job_name": job.name,
        "run_id": reaped,
        "attempt": 1,
        "worker_id": "w1",
    }
