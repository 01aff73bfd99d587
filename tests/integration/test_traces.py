"""OpenTelemetry traces (``tickwork[otel]``) on real MariaDB and RabbitMQ: one trace shows a fire
from its schedule to its result, through the message, retries included. Spans are read from the
SDK's in-memory exporter."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.worker_helpers import statuses, wait_for
from tickwork import tracing
from tickwork.config import Settings
from tickwork.scheduler.service import SchedulerService
from tickwork.spec import JobSpec
from tickwork.store.jobs import create_job
from tickwork.store.models import utcnow
from tickwork.worker import setup_broker, start_worker

pytestmark = pytest.mark.integration

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra (in dev) is not installed")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


@pytest.fixture
def flaky_target() -> Iterator[str]:
    """Answers 500 to the first request and 200 after."""
    calls = {"n": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            calls["n"] += 1
            code = 500 if calls["n"] == 1 else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


def test_one_trace_from_schedule_to_result_through_a_retry(
    cluster_settings: Settings, mysql_engine: Engine, spans: InMemorySpanExporter, flaky_target: str
) -> None:
    job = create_job(
        mysql_engine,
        JobSpec.model_validate(
            {
                "name": "traced",
                "handlerType": "http",
                "handlerData": flaky_target,
                "runAt": (utcnow() - timedelta(seconds=1)).isoformat(),
                "retryCount": 1,
                "retryBackoffSeconds": 0,
            }
        ),
    )
    broker = setup_broker(cluster_settings, engine=mysql_engine)
    worker = start_worker(cluster_settings, broker, threads=2)
    service = SchedulerService(cluster_settings, engine=mysql_engine, broker=broker)
    try:
        assert service.lease.try_acquire()
        assert service.fire_due() == 1
        wait_for(
            lambda: statuses(mysql_engine, job.id) == ["FAILED", "SUCCESS"], 60, what="a retry that succeeds"
        )

        def finished() -> list[Any]:
            got = [s for s in spans.get_finished_spans() if s.name == "tickwork.attempt"]
            return got if len(got) == 2 else []

        attempts = sorted(
            wait_for(finished, 30, what="two attempt spans"),
            key=lambda s: s.attributes["tickwork.run.attempt"],
        )
    finally:
        service.lease.release()
        worker.stop(10)
        broker.close()
    fires = [s for s in spans.get_finished_spans() if s.name == "tickwork.fire"]
    assert len(fires) == 1
    fire = fires[0]
    assert [e.name for e in fire.events] == ["committed", "published"]
    assert (
        fire.attributes["tickwork.job.id"] == job.id and fire.attributes["tickwork.run.trigger"] == "schedule"
    )
    assert fire.start_time <= fire.events[0].timestamp <= fire.end_time
    first, retry = attempts
    # One trace: the fire → attempt 1 (through the message) → attempt 2 (its retry's message).
    assert {s.context.trace_id for s in (fire, first, retry)} == {fire.context.trace_id}
    assert first.parent.span_id == fire.context.span_id
    assert retry.parent.span_id == first.context.span_id
    for span in (first, retry):
        assert [e.name for e in span.events] == ["claimed", "executing", "executed", "finished"]
        assert span.start_time >= fire.events[0].timestamp  # claimed after the fire committed
    assert first.attributes["tickwork.run.status"] == "FAILED" and first.status.status_code.name == "ERROR"
    assert retry.attributes["tickwork.run.status"] == "SUCCESS" and retry.status.status_code.name == "UNSET"
    assert retry.attributes["tickwork.run.attempt"] == 2 and retry.attributes["tickwork.worker.id"]
    assert first.events[2].attributes["outcome"] == "failure"


def test_no_spans_and_no_trace_option_when_tracing_is_off(
    mysql_engine: Engine, cluster_settings: Settings
) -> None:
    from tickwork.messaging import build_message

    assert not tracing.active()  # no SDK provider set globally in the test process
    job = create_job(
        mysql_engine,
        JobSpec.model_validate(
            {"name": "untraced", "handlerType": "http", "handlerData": "http://127.0.0.1:9/x"}
        ),
    )
    message = build_message(cluster_settings, job, run_id=1, attempt=1, scheduled_for=utcnow())
    assert tracing.OPTION not in message.options
    assert (
        tracing.start_fire(
            job_id=1, job_name="x", run_id=1, scheduled_for=utcnow(), attempt=1, trigger="schedule"
        )
        is None
    )
