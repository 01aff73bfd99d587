"""tickwork's Pipelines: a piped message still feeds its successor; others are passed over."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from tickwork.middleware.pipelines import Pipelines

pytestmark = pytest.mark.unit


def test_a_pipeline_feeds_each_result_to_the_next_actor() -> None:
    broker = StubBroker(middleware=[Pipelines()])
    seen: list[tuple[str, int]] = []

    @dramatiq.actor(broker=broker, actor_name="add_one")
    def add_one(x: int) -> int:
        seen.append(("add_one", x))
        return x + 1

    @dramatiq.actor(broker=broker, actor_name="double")
    def double(x: int) -> int:
        seen.append(("double", x))
        return x * 2

    @dramatiq.actor(broker=broker, actor_name="ignores")
    def ignores() -> None:
        seen.append(("ignores", 0))

    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        dramatiq.pipeline(
            [add_one.message(1), double.message(), ignores.message_with_options(pipe_ignore=True)],
            broker=broker,
        ).run()
        broker.join("default", fail_fast=True)
        worker.join()
        add_one.send(10)  # no pipe_target: nothing follows
        broker.join("default", fail_fast=True)
        worker.join()
    finally:
        worker.stop()
    assert seen == [("add_one", 1), ("double", 2), ("ignores", 0), ("add_one", 10)]
