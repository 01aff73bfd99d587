"""Pipelines: Dramatiq's, without its cost for the messages of no pipeline."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Pipelines as DramatiqPipelines


class Pipelines(DramatiqPipelines):
    """Dramatiq's ``Pipelines``, which enqueues a message's ``pipe_target`` after it succeeds.

    Dramatiq's hook imports ``Message`` and looks the actor up on every message before it
    finds no ``pipe_target`` (9 µs of the worker's 112 µs of hooks per message,
    benchmarks/hot_paths.py); tickwork's jobs are never piped. A message without one is passed
    over at once; any other gets Dramatiq's hook unchanged.
    """

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if "pipe_target" in message.options:
            super().after_process_message(broker, message, result=result, exception=exception)  # type: ignore[no-untyped-call]
