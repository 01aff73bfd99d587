"""LogContext: every log line written while a worker processes an attempt carries its ids."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from tickwork.config.logging import bind_log_context, reset_log_context
from tickwork.messaging import OPTION

#: The attribute of a delivery (Dramatiq's per-delivery ``MessageProxy``) holding its binding.
_TOKEN = "tickwork_log_context"


class LogContext(Middleware):
    """Binds ``job_id``, ``job_name``, ``run_id``, ``attempt``, ``message_id`` and ``worker_id``
    to the worker thread for the whole processing of a tickwork message, so the other
    middleware's and the handler's log lines carry them as fields (JSON keys, ``key=value``).

    Put it first in the middleware list: its ``before`` hook runs first and its ``after`` hooks
    (which Dramatiq runs in reverse order) run last. Messages without tickwork options are left
    alone. Async handlers run on Dramatiq's event-loop thread and do not inherit the binding.

    Parameters:
      worker_id: returns this process's worker id (e.g. ``heartbeat.current_worker_id``).
    """

    def __init__(self, *, worker_id: Callable[[], str] | None = None) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.worker_id = worker_id

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        options = message.options.get(OPTION)
        if not isinstance(options, dict):
            return
        token = bind_log_context(
            job_id=options.get("job_id"),
            job_name=options.get("job_name"),
            run_id=options.get("run_id"),
            attempt=options.get("attempt"),
            message_id=message.message_id,
            worker_id=self.worker_id() if self.worker_id is not None else None,
        )
        setattr(message, _TOKEN, token)  # on the delivery itself: no shared map, no lock

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._unbind(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._unbind(message)

    def _unbind(self, message: MessageProxy) -> None:
        token: contextvars.Token[dict[str, Any] | None] | None = getattr(message, _TOKEN, None)
        if token is not None:
            setattr(message, _TOKEN, None)
            try:
                reset_log_context(token)
            except ValueError:  # bound in another context (should not happen: same worker thread)
                self.logger.debug("log context of message %s was bound elsewhere", message.message_id)
