"""One fire instant's publish, taken apart: what the scheduler's publish lag is made of.

At 1,000 fires a second the ticker commits the instant's rows ahead, marshals the instant's
messages ahead (``tickwork.amqp.prepare``) and at the instant writes them in one buffer and
commits one RabbitMQ transaction (``publish_prepared``); the fires' ``enqueued_at``, and so the
publish lag of ``scheduling.py``, is stamped when that returns. This sends such batches of
``--messages`` persistent messages to a scratch durable queue, alternating, ``--rounds`` times:

- ``tickwork``: tickwork's own path with real tickwork messages: ``prepare`` and ``stage`` (the
  frames written into the transaction, ``--stage-ahead`` before the instant) timed apart, then
  the instant's ``tx.commit``;
- ``tx``: the same frames built here (450-byte bodies), one channel, ``tx.commit``;
- ``tx_staged``: the same frames written (and a ``basic.qos`` round trip, so RabbitMQ has read
  them) before the clock starts; only ``tx.commit`` is timed: what writing the instant's
  messages into the open transaction ahead of the instant leaves at it (tickwork's scheduler
  does so since 2026-12-05; before, its path was the ``tx`` arm's);
- ``confirm``: publisher confirms instead of a transaction, waiting for the last ack;
- ``tx_2ch`` / ``tx_4ch``: the batch split over 2 / 4 transactional channels committed at once;
- ``tx_transient``: ``delivery_mode`` 1, what RabbitMQ's persistence costs (not an option:
  a broker restart would lose the queued messages, recovered only by the outbox sweep).

    PYTHONPATH=. python benchmarks/publish_instant.py

Results go to benchmarks/results/publish_instant.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pika
from pika import frame, spec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stats import percentiles, run_machine  # noqa: E402
from benchmarks.worker_throughput import add_queue_version_option, queue_version  # noqa: E402
from tickwork import amqp  # noqa: E402
from tickwork.config import load_settings  # noqa: E402
from tickwork.messaging import build_message, make_broker, queue_name  # noqa: E402

AMQP = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
BODY = b"x" * 450  # a tickwork message's size (447 bytes for a python job's first attempt)


def frames(channel: Any, queue: str, count: int, *, persistent: bool = True) -> bytes:
    number = channel._impl.channel_number
    properties = pika.BasicProperties(delivery_mode=2 if persistent else 1)
    parts = []
    for _ in range(count):
        parts.append(frame.Method(number, spec.Basic.Publish(exchange="", routing_key=queue)).marshal())
        parts.append(frame.Header(number, len(BODY), properties).marshal())
        parts.append(frame.Body(number, BODY).marshal())
    return b"".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1000, help="per batch (one fire instant)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between batches")
    parser.add_argument(
        "--stage-ahead",
        type=float,
        default=0.03,
        help="tickwork arm: seconds between staging the batch and its instant's commit",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "publish_instant.json"))
    add_queue_version_option(parser, "the scratch queues")
    args = parser.parse_args()
    namespace = f"twbench{uuid.uuid4().hex[:8]}"
    with queue_version(f"^{namespace}\\.", args.queue_version):
        return measure(args, namespace)


def measure(args: argparse.Namespace, namespace: str) -> int:
    n = args.messages
    started = datetime.now(UTC)
    load_start = os.getloadavg()
    settings = load_settings(broker_url=AMQP, namespace=namespace, database_url="sqlite://")
    broker: Any = make_broker(settings)  # RabbitMQ (its thread's channel is used below)
    tw_queue = queue_name(settings, "default")
    job = SimpleNamespace(
        id=1, name="instant", queue="default", handler_type="python", handler_data="instant",
        retry_count=3, retry_backoff_seconds=1.0, max_backoff_seconds=60.0, timeout_seconds=30.0,
        max_concurrency=None, parameters=None,
    )  # fmt: skip

    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    admin = conn.channel()
    queue = f"{namespace}.raw"
    admin.queue_declare(queue, durable=True)
    tx_channels = []
    for _ in range(4):
        channel = conn.channel()
        channel.tx_select()
        tx_channels.append(channel)
    confirm = conn.channel()
    acked = {"tag": 0, "nacks": 0, "sent": 0}

    def on_ack(method_frame: Any) -> None:
        if isinstance(method_frame.method, spec.Basic.Nack):
            acked["nacks"] += 1
        acked["tag"] = max(acked["tag"], method_frame.method.delivery_tag)

    confirm._impl.confirm_delivery(ack_nack_callback=on_ack, callback=lambda _f: None)
    conn.process_data_events(time_limit=0.2)

    def split(k: int, persistent: bool = True) -> Callable[[], None]:
        def send() -> None:
            use = tx_channels[:k]
            data = [frames(c, queue, n // k, persistent=persistent) for c in use]
            done: list[int] = []
            start = time.perf_counter()
            conn._impl._output_marshaled_frames(data)
            for c in use:
                c._impl.tx_commit(callback=lambda _f: done.append(1))
            while len(done) < k:
                conn.process_data_events(time_limit=0.0005)
            timings["send_ms"] = (time.perf_counter() - start) * 1000

        return send

    def staged() -> None:
        c = tx_channels[0]
        data = frames(c, queue, n)
        conn._impl._output_marshaled_frames([data])
        c.basic_qos(prefetch_count=0)  # a round trip: RabbitMQ has parsed every frame before it
        start = time.perf_counter()
        c.tx_commit()
        timings["send_ms"] = (time.perf_counter() - start) * 1000

    def confirmed() -> None:
        data = frames(confirm, queue, n)
        start = time.perf_counter()
        conn._impl._output_marshaled_frames([data])
        acked["sent"] += n
        while acked["tag"] < acked["sent"]:
            conn.process_data_events(time_limit=0.0005)
        timings["send_ms"] = (time.perf_counter() - start) * 1000

    def tickwork() -> None:
        now = datetime.now(UTC)
        messages = [
            build_message(settings, job, run_id=i, attempt=1, scheduled_for=now)  # type: ignore[arg-type]
            for i in range(n)
        ]
        start = time.perf_counter()
        batch = amqp.prepare(broker, messages)
        prepared = time.perf_counter()
        amqp.stage(broker, batch)
        staged = time.perf_counter()
        time.sleep(args.stage_ahead)  # the scheduler stages the batch this long before its instant
        instant = time.perf_counter()
        amqp.publish_prepared(broker, batch)
        timings["prepare_ms"] = (prepared - start) * 1000
        timings["stage_ms"] = (staged - prepared) * 1000
        timings["send_ms"] = (time.perf_counter() - instant) * 1000

    arms: dict[str, Callable[[], None]] = {
        "tickwork": tickwork,
        "tx": split(1),
        "tx_staged": staged,
        "confirm": confirmed,
        "tx_2ch": split(2),
        "tx_4ch": split(4),
        "tx_transient": split(1, persistent=False),
    }
    samples: dict[str, dict[str, list[float]]] = {arm: {} for arm in arms}
    timings: dict[str, float] = {}
    try:
        for number in range(args.rounds + 1):  # the first round warms up and is not counted
            order = list(arms) if number % 2 == 0 else list(reversed(arms))
            for arm in order:
                timings.clear()
                arms[arm]()
                if number:
                    for key, value in timings.items():
                        samples[arm].setdefault(key, []).append(value)
                time.sleep(args.pause)
                admin.queue_purge(queue)
                broker.channel.queue_purge(tw_queue)
            print(f"round {number}: done", flush=True)
    finally:
        with_errors = []
        for name in (queue, tw_queue, f"{tw_queue}.DQ", f"{tw_queue}.XQ"):
            try:
                admin.queue_delete(name)
            except Exception as exc:  # reported; the other queues are still deleted
                with_errors.append(f"{name}: {exc}")
        conn.close()
        broker.close()
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for arm, parts in samples.items():
        summary[arm] = {}
        for key, values in parts.items():
            p50, p90, top = percentiles(values, 0.5, 0.9, 1.0)
            summary[arm][key] = {"p50": round(p50, 2), "p90": round(p90, 2), "max": round(top, 2)}
    results = {
        "machine": run_machine(started, load_start),
        "messages_per_batch": n,
        "rounds": args.rounds,
        "queue_version": args.queue_version or "broker default",
        "nacks": acked["nacks"],
        "cleanup_errors": with_errors,
        "summary": summary,
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
