"""Traces: the ``executing`` and ``executed`` events of an attempt's span, right around the actor.

Last in the middleware list, so its ``before_process_message`` runs just before the actor (after
RunLog's claim) and its ``after_process_message`` just after it (before Backoff and DeadLetter
record the outcome). The span itself is RunLog's (:mod:`tickwork.tracing`). Does nothing when
tracing is off.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from tickwork import tracing


class Traces(Middleware):
    """Marks the actor's execution on the current attempt's span."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        tracing.attempt_event("executing")

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            tracing.attempt_event("executed", outcome="success")
        else:
            tracing.attempt_event("executed", outcome="failure", error=type(exception).__name__)
