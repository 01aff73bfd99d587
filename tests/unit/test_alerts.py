"""The alert rules as pure functions (tickwork/alerts.py): health order, lateness, auto-pause,
delivery backoff and the webhook signature."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickwork.alerts import (
    Event,
    Health,
    auto_pause_reason,
    delivery_delay,
    delivery_expired,
    fire_is_late,
    job_health,
    missing_fire_document,
    notification_body,
    notification_targets,
    sign,
    success_recovers,
    verify,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def test_health_order_paused_then_late_then_failing() -> None:
    assert job_health(enabled=False, late=True, last_final_status="DEAD") == Health.PAUSED
    assert job_health(enabled=True, late=True, last_final_status="DEAD") == Health.LATE
    assert job_health(enabled=True, late=False, last_final_status="DEAD") == Health.FAILING
    assert job_health(enabled=True, late=False, last_final_status="SUCCESS") == Health.HEALTHY
    assert job_health(enabled=True, late=False, last_final_status=None) == Health.HEALTHY


def test_a_fire_is_late_only_once_its_deadline_passed_without_success_by_then() -> None:
    deadline = T0 + timedelta(seconds=30)
    before = deadline - timedelta(microseconds=1)
    assert not fire_is_late(scheduled_for=T0, late_after_seconds=30, succeeded_at=None, now=before)
    assert fire_is_late(scheduled_for=T0, late_after_seconds=30, succeeded_at=None, now=deadline)
    on_time = T0 + timedelta(seconds=29)
    assert not fire_is_late(
        scheduled_for=T0, late_after_seconds=30, succeeded_at=on_time, now=T0 + timedelta(hours=1)
    )
    assert not fire_is_late(scheduled_for=T0, late_after_seconds=30, succeeded_at=deadline, now=deadline)
    too_late = deadline + timedelta(seconds=1)
    assert fire_is_late(scheduled_for=T0, late_after_seconds=30, succeeded_at=too_late, now=too_late)


@given(
    offset=st.integers(min_value=0, max_value=10_000),
    late_after=st.integers(min_value=1, max_value=3600),
    success=st.one_of(st.none(), st.integers(min_value=0, max_value=10_000)),
)
def test_lateness_is_final_once_decided(offset: int, late_after: int, success: int | None) -> None:
    """Whatever is decided at a time past the deadline is decided the same at any later time
    (the sweep's watermark relies on it)."""
    succeeded = None if success is None else T0 + timedelta(seconds=success)
    now = T0 + timedelta(seconds=late_after + offset)
    if succeeded is not None and succeeded > now:
        succeeded = None  # not yet happened at ``now``... and a later success is still late
    first = fire_is_late(scheduled_for=T0, late_after_seconds=late_after, succeeded_at=succeeded, now=now)
    later = fire_is_late(
        scheduled_for=T0, late_after_seconds=late_after, succeeded_at=succeeded, now=now + timedelta(days=1)
    )
    assert first == later


def test_auto_pause_after_exactly_n_consecutive_dead_runs() -> None:
    assert auto_pause_reason(["DEAD", "DEAD"], 3) is None
    assert auto_pause_reason(["DEAD", "DEAD", "DEAD"], 3) == "auto: 3 consecutive dead runs"
    assert auto_pause_reason(["DEAD", "SUCCESS", "DEAD", "DEAD"], 3) is None
    assert auto_pause_reason(["DEAD"] * 5, 5) == "auto: 5 consecutive dead runs"
    assert auto_pause_reason(["DEAD"] * 5, None) is None


def test_a_late_job_recovers_on_an_on_time_success_a_failing_one_on_any() -> None:
    since = T0 + timedelta(seconds=10)
    late_success = {"scheduled_for": T0, "finished_at": T0 + timedelta(seconds=40), "since": since}
    assert not success_recovers(**late_success, late=True, late_after_seconds=30)
    assert success_recovers(**late_success, late=False, late_after_seconds=30)
    on_time = {"scheduled_for": T0 + timedelta(seconds=20), "finished_at": T0 + timedelta(seconds=21)}
    assert success_recovers(**on_time, since=since, late=True, late_after_seconds=30)
    assert not success_recovers(
        **on_time, since=T0 + timedelta(seconds=30), late=False, late_after_seconds=None
    )


def test_delivery_backoff_doubles_up_to_the_cap_and_gives_up_at_the_deadline() -> None:
    delays = [delivery_delay(n, base_seconds=10, max_seconds=3600) for n in range(1, 12)]
    assert delays[:4] == [10, 20, 40, 80]
    assert max(delays) == 3600 and delays == sorted(delays)
    assert not delivery_expired(T0, T0 + timedelta(hours=23), deadline_seconds=86400)
    assert delivery_expired(T0, T0 + timedelta(days=1), deadline_seconds=86400)


def test_every_event_goes_to_the_global_and_the_job_url_once_each() -> None:
    assert notification_targets("http://a/h", "http://b/h") == ["http://a/h", "http://b/h"]
    assert notification_targets("http://a/h", "http://a/h") == ["http://a/h"]
    assert notification_targets(None, None) == []
    assert notification_targets(None, "http://b/h") == ["http://b/h"]


def test_the_signature_is_hmac_sha256_of_the_body_as_sent() -> None:
    body = notification_body(
        Event.JOB_LATE, T0, {"id": 1, "name": "nightly"}, missing_fire_document(T0)
    ).encode()
    document = json.loads(body)
    assert set(document) == {"event", "at", "job", "run"}
    assert document["event"] == "job.late" and document["run"]["status"] == "MISSING"
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == f"sha256={expected}"
    assert verify(body, "s3cret", f"sha256={expected}")
    assert not verify(body + b" ", "s3cret", f"sha256={expected}")
    assert not verify(body, "other", f"sha256={expected}")
