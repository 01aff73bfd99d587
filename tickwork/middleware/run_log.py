"""RunLog: every tickwork attempt claimed once (PENDING → RUNNING) and its outcome written back.

The claim is one compare-and-set ``UPDATE``; a message whose claim fails (a duplicate delivery,
a second publish, a replayed message whose attempt already ran) is skipped, not executed. The
finish is one more ``UPDATE``. Everything else the worker needs is in ``options["tickwork"]``,
so the hot path is two writes and no reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, SkipMessage
from sqlalchemy import Engine

from tickwork.messaging import HTTP_ACTOR
from tickwork.middleware.attempt import (
    ClaimedAttempt,
    attach_attempt,
    describe_failure,
    detach_attempt,
    failure_http_status,
    failure_traceback,
    format_output,
    options_of,
    set_current_attempt,
    track_in_flight,
    untrack_in_flight,
    write_with_retries,
)
from tickwork.store.recorder import AttemptRecorder
from tickwork.vocabulary import RunStatus

#: Default cap on the recorded output, in bytes of UTF-8.
DEFAULT_OUTPUT_MAX_BYTES = 65536


class RunLog(Middleware):
    """Claims tickwork attempts before their actor runs and records how they ended.

    Messages without ``options["tickwork"]`` (plain Dramatiq actors on the same broker) pass
    through untouched.

    Parameters:
      engine: the store.
      worker_id: a callable giving this process's worker id (it changes after a fork).
      output_max_bytes: the recorded output is cut to this many bytes.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        worker_id: Callable[[], str],
        output_max_bytes: int = DEFAULT_OUTPUT_MAX_BYTES,
    ) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.recorder = AttemptRecorder(engine)
        self.worker_id = worker_id
        self.output_max_bytes = output_max_bytes

    @property
    def actor_options(self) -> set[str]:
        # ``throws``: failures a job reports on purpose (an HTTP 500, a timeout). Dramatiq's
        # worker logs them in one line instead of a traceback; they are retried all the same.
        return {"throws"}

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        set_current_attempt(None)
        options = options_of(message)
        if options is None:
            return
        worker_id = self.worker_id()
        # In flight before the claim: a heartbeat taken after the claim's start time lists it.
        track_in_flight(options["run_id"])
        try:
            # Over a database outage the claim waits (a failed claim would leave the fire to the
            # outbox sweep, a grace period late).
            claimed = write_with_retries(
                lambda: self.recorder.claim(options["run_id"], worker_id, message_id=message.message_id),
                what=f"the claim of run {options['run_id']}",
                logger=self.logger,
                attempts=1,
            )
        except Exception:
            untrack_in_flight(options["run_id"])
            # Without a claim the attempt must not run; the PENDING row stays for the outbox sweep.
            self.logger.exception("Claiming run %s failed; skipping its message.", options["run_id"])
            raise SkipMessage("claim failed") from None
        if not claimed:
            untrack_in_flight(options["run_id"])
            self.logger.info(
                "Run %s attempt %s of job %s is already claimed or finished; skipping message %s.",
                options["run_id"],
                options["attempt"],
                options["job_name"],
                message.message_id,
            )
            raise SkipMessage("attempt already claimed")
        attach_attempt(
            message,
            ClaimedAttempt(options=options, worker_id=worker_id, is_http=message.actor_name == HTTP_ACTOR),
        )
        self.logger.debug(
            "Run %s attempt %s of job %s started.", options["run_id"], options["attempt"], options["job_name"]
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        attempt = detach_attempt(message)
        if attempt is None:
            return
        try:
            if attempt.settled:
                return
            if exception is None:
                self._finish(
                    attempt,
                    status=RunStatus.SUCCESS,
                    output=format_output(attempt.result, self.output_max_bytes),
                    http_status=attempt.http_status,
                )
                self.logger.info(
                    "Run %s attempt %s of job %s succeeded in %.1f ms.",
                    attempt.run_id,
                    attempt.options["attempt"],
                    attempt.options["job_name"],
                    (time.monotonic() - attempt.started) * 1000,
                )
            else:
                # Reached only without Backoff and DeadLetter on the broker.
                self._finish(
                    attempt,
                    status=RunStatus.FAILED,
                    output=getattr(exception, "output", None),
                    http_status=failure_http_status(exception, attempt),
                    error=describe_failure(exception, attempt.timeout_seconds),
                    traceback=failure_traceback(exception, attempt),
                )
        finally:
            # Whatever could not be written stays RUNNING, no longer in flight: the reaper's.
            untrack_in_flight(attempt.run_id)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """A later middleware skipped a claimed attempt: it is left to the reaper, not stranded."""
        attempt = detach_attempt(message)
        if attempt is not None:
            untrack_in_flight(attempt.run_id)

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        """A tickwork message for an actor this worker does not have: record it DEAD, visibly.

        Otherwise its row would stay PENDING and the outbox sweep would republish it forever.
        """
        options = options_of(message)
        if options is None or not isinstance(getattr(message, "_exception", None), ActorNotFound):
            return
        worker_id = self.worker_id()
        try:
            if self.recorder.claim(options["run_id"], worker_id, message_id=message.message_id):
                self.recorder.finish(
                    options["run_id"],
                    worker_id,
                    status=RunStatus.DEAD,
                    error=f"unknown handler: no @job function named {message.actor_name!r} "
                    f"in worker {worker_id} (check TICKWORK_IMPORTS)",
                )
        except Exception:
            self.logger.exception("Recording the unknown handler of run %s failed.", options["run_id"])

    def _finish(self, attempt: ClaimedAttempt, **values: Any) -> None:
        try:
            finished = write_with_retries(
                lambda: self.recorder.finish(attempt.run_id, attempt.worker_id, **values),
                what=f"the outcome of run {attempt.run_id}",
                logger=self.logger,
            )
        except Exception:
            self.logger.exception(
                "Recording the outcome of run %s failed; the reaper will settle it.", attempt.run_id
            )
            return
        if not finished:
            self.logger.warning(
                "Run %s was no longer RUNNING under worker %s (reaped?); outcome %s not recorded.",
                attempt.run_id,
                attempt.worker_id,
                values.get("status"),
            )
