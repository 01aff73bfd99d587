"""The Metrics middleware on Dramatiq's StubBroker, and the metrics exposition."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware, SkipMessage
from prometheus_client import CollectorRegistry

from tickwork.metrics import ClusterCollector, TickworkMetrics, read_cluster_state, start_metrics_server
from tickwork.middleware.metrics import Metrics

pytestmark = pytest.mark.unit

QUEUE = "twtest.default"
SCHEDULED = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class SkipRun(Middleware):
    """Stands in for RunLog losing the claim: skips messages whose run id is in ``claimed``."""

    def __init__(self) -> None:
        self.claimed: set[int] = set()

    def before_process_message(self, broker: Any, message: Any) -> None:
        if message.options.get("tickwork", {}).get("run_id") in self.claimed:
            raise SkipMessage("claimed elsewhere")


@pytest.fixture
def setup() -> Iterator[tuple[StubBroker, CollectorRegistry, SkipRun]]:
    registry = CollectorRegistry()
    skip = SkipRun()
    # Lag is measured against a fixed wall clock: 2.5 s after the scheduled time.
    metrics = Metrics(metrics=TickworkMetrics(registry), wall_clock=lambda: SCHEDULED.timestamp() + 2.5)
    broker = StubBroker(middleware=[metrics, skip])
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker, queue_name=QUEUE, actor_name="work")
    def work(fail: bool = False) -> None:
        if fail:
            raise RuntimeError("boom")

    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    yield broker, registry, skip
    worker.stop()
    broker.close()


def send(
    broker: StubBroker,
    *,
    run_id: int,
    attempt: int = 1,
    retry_count: int = 0,
    fail: bool = False,
    trigger: str = "schedule",
    scheduled_for: datetime = SCHEDULED,
) -> None:
    options = {
        "tickwork": {
            "run_id": run_id,
            "job_id": 7,
            "job_name": "nightly",
            "attempt": attempt,
            "scheduled_for": scheduled_for.isoformat(),
            "retry_count": retry_count,
            "trigger": trigger,
        }
    }
    broker.enqueue(
        dramatiq.Message(queue_name=QUEUE, actor_name="work", args=(), kwargs={"fail": fail}, options=options)
    )
    broker.join(QUEUE, fail_fast=False)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_success_counts_run_duration_and_lag(setup: Any) -> None:
    broker, registry, _ = setup
    send(broker, run_id=1)
    assert value(registry, "tickwork_runs_total", job_name="nightly", status="SUCCESS") == 1
    assert value(registry, "tickwork_attempt_duration_seconds_count", queue="default", status="SUCCESS") == 1
    lag = {"queue": "default", "trigger": "schedule"}
    assert value(registry, "tickwork_scheduling_lag_seconds_count", **lag) == 1
    assert value(registry, "tickwork_scheduling_lag_seconds_sum", **lag) == pytest.approx(2.5)
    assert value(registry, "tickwork_attempts_in_progress", queue="default") == 0


def test_failure_with_retries_left_counts_a_retry_then_dead(setup: Any) -> None:
    broker, registry, _ = setup
    send(broker, run_id=2, attempt=1, retry_count=1, fail=True)
    assert value(registry, "tickwork_runs_total", job_name="nightly", status="FAILED") == 1
    assert value(registry, "tickwork_retries_total", job_name="nightly") == 1
    send(broker, run_id=3, attempt=2, retry_count=1, fail=True)
    assert value(registry, "tickwork_runs_total", job_name="nightly", status="DEAD") == 1
    assert value(registry, "tickwork_dead_letters_total", job_name="nightly") == 1
    # A retry starts late on purpose: only the first attempt's lag is observed.
    assert value(registry, "tickwork_scheduling_lag_seconds_count", queue="default", trigger="schedule") == 1


def test_skipped_message_is_not_a_run(setup: Any) -> None:
    broker, registry, skip = setup
    skip.claimed.add(4)
    send(broker, run_id=4)
    assert value(registry, "tickwork_skipped_messages_total", queue="default") == 1
    assert value(registry, "tickwork_runs_total", job_name="nightly", status="SUCCESS") == 0
    assert value(registry, "tickwork_attempts_in_progress", queue="default") == 0


def test_plain_dramatiq_message_is_ignored(setup: Any) -> None:
    broker, registry, _ = setup
    broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name="work", args=(), kwargs={}, options={}))
    broker.join(QUEUE)
    assert value(registry, "tickwork_attempt_duration_seconds_count", queue="default", status="SUCCESS") == 0


def test_metrics_server_serves_cluster_gauges() -> None:
    state = {"leader": {"node_id": "node-a", "ttl_ms": 2000}, "schedulers": [{}, {}], "workers": [{}, {}, {}]}
    calls: list[int] = []

    def dlq() -> int:
        calls.append(1)
        return 4

    def broken() -> dict[str, int]:
        raise ConnectionError("rabbitmq down")

    collector = ClusterCollector(dlq_size=dlq, queue_depths=broken, cluster_state=lambda: state)
    port = start_metrics_server(0, addr="127.0.0.1", extra=[collector])
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "tickwork_dlq_size 4.0" in body
    assert "tickwork_live_workers 3.0" in body
    assert 'tickwork_leader{node_id="node-a"} 1.0' in body
    assert "tickwork_queue_depth" not in body  # a failing source is left out, not fatal
    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert len(calls) == 1  # cached between scrapes


class FakeRedis:
    def __init__(self, data: dict[str, tuple[bytes, int]]) -> None:
        self.data = data

    def get(self, key: str) -> bytes | None:
        return self.data.get(key, (None, 0))[0]

    def pttl(self, key: str) -> int:
        return self.data.get(key, (None, -2))[1]

    def scan_iter(self, pattern: str, count: int = 0) -> list[bytes]:
        prefix = pattern.rstrip("*")
        return [k.encode() for k in self.data if k.startswith(prefix)]

    def pipeline(self, transaction: bool = False) -> Any:
        outer = self

        class Pipe:
            def __init__(self) -> None:
                self.calls: list[Any] = []

            def get(self, key: bytes) -> None:
                self.calls.append(outer.get(key.decode()))

            def pttl(self, key: bytes) -> None:
                self.calls.append(outer.pttl(key.decode()))

            def execute(self) -> list[Any]:
                return self.calls

        return Pipe()


def test_read_cluster_state() -> None:
    client = FakeRedis(
        {
            "ns:scheduler:leader": (b"node-a 9f8e", 2500),
            "ns:scheduler:node:node-a": (b'{"node_id": "node-a", "pid": 1}', 5000),
            "ns:scheduler:node:node-b": (b'{"node_id": "node-b", "pid": 2}', 4000),
            "ns:worker:w1": (b'{"worker_id": "w1", "pid": 3}', 9000),
        }
    )
    state = read_cluster_state(client, "ns")
    assert state["leader"] == {"node_id": "node-a", "ttl_ms": 2500}
    assert [s["node_id"] for s in state["schedulers"]] == ["node-a", "node-b"]
    assert [(w["worker_id"], w["ttl_seconds"]) for w in state["workers"]] == [("w1", 9.0)]


def test_fires_count_a_pending_row_as_fired() -> None:
    """The scheduler's rows are keyed by run status; a PENDING row is a fire made."""
    registry = CollectorRegistry()
    metrics = TickworkMetrics(registry)
    metrics.record_fires({"PENDING": 3, "MISSED": 1, "SKIPPED": 2})
    assert value(registry, "tickwork_fires_total", outcome="fired") == 3.0
    assert value(registry, "tickwork_fires_total", outcome="missed") == 1.0
    assert value(registry, "tickwork_fires_total", outcome="skipped") == 2.0
    assert value(registry, "tickwork_fires_total", outcome="pending") == 0.0


def test_catch_up_fires_do_not_pollute_the_on_time_lag(setup: Any) -> None:
    """A one-time job's runAt in 2020 (a misfire catch-up) is 2e8 s late; the on-time series must
    not see it, and it is still visible in its own series."""
    broker, registry, _ = setup
    send(broker, run_id=10)
    send(broker, run_id=11, trigger="misfire", scheduled_for=datetime(2020, 1, 1, tzinfo=UTC))
    send(broker, run_id=12, trigger="manual")
    on_time = {"queue": "default", "trigger": "schedule"}
    assert value(registry, "tickwork_scheduling_lag_seconds_count", **on_time) == 1
    assert value(registry, "tickwork_scheduling_lag_seconds_sum", **on_time) == pytest.approx(2.5)
    catch_up = {"queue": "default", "trigger": "misfire"}
    assert value(registry, "tickwork_scheduling_lag_seconds_count", **catch_up) == 1
    assert value(registry, "tickwork_scheduling_lag_seconds_sum", **catch_up) > 1e8
    assert value(registry, "tickwork_scheduling_lag_seconds_count", queue="default", trigger="manual") == 1


def test_messages_carry_their_runs_trigger() -> None:
    from types import SimpleNamespace
    from typing import cast

    from tickwork.config import load_settings
    from tickwork.messaging import build_message
    from tickwork.store.models import Job

    job = cast(
        Job,
        SimpleNamespace(
            id=1,
            name="j",
            handler_type="http",
            handler_data="http://x.test/",
            parameters=None,
            queue="default",
            retry_count=0,
            retry_backoff_seconds=1,
            max_backoff_seconds=1,
            timeout_seconds=None,
            max_concurrency=None,
        ),
    )
    settings = load_settings(database_url="sqlite://", broker_url="memory://")
    for trigger in ("schedule", "misfire", "manual", "replay"):
        message = build_message(settings, job, run_id=1, attempt=1, scheduled_for=SCHEDULED, trigger=trigger)
        assert message.options["tickwork"]["trigger"] == trigger
