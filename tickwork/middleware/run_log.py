"""RunLog: every tickwork attempt claimed once (PENDING → RUNNING) and its outcome written back.

The claim is one compare-and-set ``UPDATE``; a message whose claim fails (a duplicate delivery,
a second publish, a replayed message whose attempt already ran) is skipped, not executed. The
finish is one more ``UPDATE``. Everything else the worker needs is in ``options["tickwork"]``,
so the hot path is two writes and no reads.

A success is recorded without holding the worker thread: the thread takes its next message
while its outcome is written with the next group of claims. The attempt stays in
this process's in-flight list (the heartbeat's) until its outcome is committed, a worker
shutdown waits for every outcome still being written, and an outcome that cannot be written at
once is written by a fallback thread that waits out a database outage. A crash before the
outcome is committed leaves the attempt RUNNING, as a crash while the job runs does: the
reaper fails and retries it as ``worker lost`` (design guarantee 4). The claim, and failures
(Backoff and DeadLetter write those), are still written before the thread goes on.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dramatiq
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, SkipMessage
from sqlalchemy import Engine

from tickwork import tracing
from tickwork.config import Settings
from tickwork.lifecycle import Dead, Failure, settle_failure
from tickwork.messaging import HTTP_ACTOR
from tickwork.middleware.attempt import (
    ClaimedAttempt,
    attach_attempt,
    describe_failure,
    detach_attempt,
    failed_attempt,
    failure_http_status,
    failure_traceback,
    format_output,
    options_of,
    set_current_attempt,
    track_in_flight,
    untrack_in_flight,
    write_with_retries,
)
from tickwork.store.concurrency import Claim, claim_within_limit
from tickwork.store.recorder import DEFAULT_COMMIT_DELAY, AttemptRecorder
from tickwork.vocabulary import RunStatus

#: Default cap on the recorded output, in bytes of UTF-8.
DEFAULT_OUTPUT_MAX_BYTES = 65536
#: An attempt of a job at its ``maxConcurrency`` tries its claim again after this long.
DEFAULT_SLOT_WAIT_MS = 500


class RunLog(Middleware):
    """Claims tickwork attempts before their actor runs and records how they ended.

    Messages without ``options["tickwork"]`` (plain Dramatiq actors on the same broker) pass
    through untouched.

    Parameters:
      engine: the store.
      worker_id: a callable giving this process's worker id (it changes after a fork).
      output_max_bytes: the recorded output is cut to this many bytes.
      slot_wait_ms: how long an attempt of a job at its ``maxConcurrency`` waits (±20 %) before
        its claim is tried again.
      async_success: write a success's outcome without holding the worker thread (False: the
        thread waits for the commit, as it does for a claim).
      settings: the settings (dead-letter queue, notify URL) for runs of an unknown handler;
        without them such a run is only recorded DEAD.
      commit_delay_ms: see :class:`~tickwork.store.recorder.AttemptRecorder`'s ``commit_delay``.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        worker_id: Callable[[], str],
        output_max_bytes: int = DEFAULT_OUTPUT_MAX_BYTES,
        slot_wait_ms: int = DEFAULT_SLOT_WAIT_MS,
        async_success: bool = True,
        settings: Settings | None = None,
        commit_delay_ms: float = DEFAULT_COMMIT_DELAY * 1000,
    ) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.recorder = AttemptRecorder(engine, commit_delay=commit_delay_ms / 1000)
        self.worker_id = worker_id
        self.output_max_bytes = output_max_bytes
        self.slot_wait_ms = slot_wait_ms
        self.async_success = async_success
        #: Names the dead-letter queue and the global notify URL for a run of an unknown handler.
        self.settings = settings
        #: Outcomes handed to the recorder and not yet written (or given up on).
        self._pending = 0
        self._pending_cond = threading.Condition()
        self._fallback: ThreadPoolExecutor | None = None
        self._fallback_pid = 0

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
        tracing.begin_attempt(message, options)
        # In flight before the claim: a heartbeat taken after the claim's start time lists it.
        track_in_flight(options["run_id"])
        try:
            # Over a database outage the claim waits (a failed claim would leave the fire to the
            # outbox sweep, a grace period late).
            claimed = write_with_retries(
                lambda: self._claim(options, worker_id, message),
                what=f"the claim of run {options['run_id']}",
                logger=self.logger,
                attempts=1,
            )
        except Exception:
            untrack_in_flight(options["run_id"])
            # Without a claim the attempt must not run; the PENDING row stays for the outbox sweep.
            self.logger.exception("Claiming run %s failed; skipping its message.", options["run_id"])
            tracing.end_attempt(status="claim failed", error="claim failed")
            raise SkipMessage("claim failed") from None
        if claimed is Claim.FULL:
            untrack_in_flight(options["run_id"])
            self._wait_for_a_slot(broker, message, options)
            tracing.end_attempt(status="waiting for a slot")
            raise SkipMessage("job at its maxConcurrency")
        if not claimed:
            untrack_in_flight(options["run_id"])
            self.logger.info(
                "Run %s attempt %s of job %s is already claimed or finished; skipping message %s.",
                options["run_id"],
                options["attempt"],
                options["job_name"],
                message.message_id,
            )
            tracing.end_attempt(status="already claimed")
            raise SkipMessage("attempt already claimed")
        attach_attempt(
            message,
            ClaimedAttempt(options=options, worker_id=worker_id, is_http=message.actor_name == HTTP_ACTOR),
        )
        tracing.attempt_event("claimed", worker_id=worker_id)
        self.logger.debug(
            "Run %s attempt %s of job %s started.", options["run_id"], options["attempt"], options["job_name"]
        )

    def _claim(self, options: Any, worker_id: str, message: Any) -> bool | Claim:
        """The hot path's group-committed claim, or (only for a job with ``maxConcurrency``) the
        claim that counts the job's RUNNING attempts under its row lock."""
        if options.get("max_concurrency") is None:
            return self.recorder.claim(options["run_id"], worker_id, message_id=message.message_id)
        claim = claim_within_limit(
            self.recorder.engine,
            options["run_id"],
            worker_id,
            job_id=options["job_id"],
            message_id=message.message_id,
        )
        return claim if claim is Claim.FULL else claim is Claim.CLAIMED

    def _wait_for_a_slot(self, broker: dramatiq.Broker, message: Any, options: Any) -> None:
        """Send the message again after a short delay: the attempt stays PENDING (not dropped,
        not failed) and is claimed once a slot is free. If the send fails, the PENDING row is
        the outbox sweep's, as for any unpublished attempt."""
        delay = int(self.slot_wait_ms * random.uniform(0.8, 1.2))
        try:
            broker.enqueue(message.copy(), delay=delay)
        except Exception:
            self.logger.warning(
                "Re-sending waiting run %s failed; the outbox sweep will.", options["run_id"], exc_info=True
            )
            return
        self.logger.debug(
            "Run %s of job %s waits for a slot (maxConcurrency %s); again in %d ms.",
            options["run_id"],
            options["job_name"],
            options["max_concurrency"],
            delay,
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
        handed_over = False
        try:
            if attempt.settled:
                return
            if exception is None:
                values: dict[str, Any] = {
                    "status": RunStatus.SUCCESS,
                    "output": format_output(attempt.result, self.output_max_bytes),
                    "http_status": attempt.http_status,
                }
                if self.async_success:
                    self._finish_later(attempt, values)
                    handed_over = True  # its commit (or the fallback) untracks it
                else:
                    self._finish(attempt, **values)
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
            if not handed_over:
                untrack_in_flight(attempt.run_id)
            tracing.attempt_event("finished")
            tracing.end_attempt(
                status="SUCCESS" if exception is None else "FAILED",
                error=None if exception is None else describe_failure(exception, attempt.timeout_seconds),
                worker_id=attempt.worker_id,
            )

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        """A later middleware skipped a claimed attempt: it is left to the reaper, not stranded."""
        attempt = detach_attempt(message)
        if attempt is not None:
            untrack_in_flight(attempt.run_id)
        tracing.end_attempt(status="skipped")

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        """A tickwork message for an actor this worker does not have: record it DEAD, visibly.

        Otherwise its row would stay PENDING and the outbox sweep would republish it forever.
        It is settled as every dead run is (:func:`tickwork.lifecycle.settle_failure`): the
        ``run.dead`` notification, the auto-pause after ``pauseAfterFailures``, and a copy on
        the dead-letter queue to replay once a worker has the handler.
        """
        options = options_of(message)
        if options is None or not isinstance(getattr(message, "_exception", None), ActorNotFound):
            return
        worker_id = self.worker_id()
        error = (
            f"unknown handler: no @job function named {message.actor_name!r} "
            f"in worker {worker_id} (check TICKWORK_IMPORTS)"
        )
        try:
            if not self.recorder.claim(options["run_id"], worker_id, message_id=message.message_id):
                return
            if self.settings is None:  # no dead-letter queue to name: the row only
                self.recorder.finish(options["run_id"], worker_id, status=RunStatus.DEAD, error=error)
                return
            attempt = ClaimedAttempt(options=options, worker_id=worker_id, is_http=False)
            settle_failure(
                self.settings,
                self.recorder.engine,
                broker,
                failed_attempt(message, attempt),
                Failure(error=error),
                step=Dead(),
            )
        except Exception:
            self.logger.exception("Recording the unknown handler of run %s failed.", options["run_id"])

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        """The recorder's connection is open before the first message is claimed."""
        try:
            self.recorder.warm()
        except Exception:  # the first claim starts it again
            self.logger.warning("Starting the attempt recorder failed.", exc_info=True)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        """The worker threads have stopped: wait for the outcomes still being written."""
        if not self.flush():
            self.logger.warning(
                "%d outcome(s) were still being written at shutdown; the reaper will settle them.",
                self._pending,
            )

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until every outcome handed over so far is written (or given up on); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._pending_cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._pending_cond.wait(left)
        return True

    def _finish_later(self, attempt: ClaimedAttempt, values: dict[str, Any]) -> None:
        with self._pending_cond:
            self._pending += 1

        def then(finished: bool, error: BaseException | None) -> None:
            # On the thread that committed its group: keep it short; a failed write goes to the
            # fallback thread.
            if error is not None:
                self._fallback_executor().submit(self._finish_fallback, attempt, values)
                return
            if not finished:
                self._not_finished(attempt, values)
            self._settled(attempt)

        try:
            self.recorder.finish_later(attempt.run_id, attempt.worker_id, then, **values)
        except BaseException:
            self._settled(attempt)
            raise

    def _finish_fallback(self, attempt: ClaimedAttempt, values: dict[str, Any]) -> None:
        try:
            self._finish(attempt, **values)
        finally:
            self._settled(attempt)

    def _settled(self, attempt: ClaimedAttempt) -> None:
        untrack_in_flight(attempt.run_id)
        with self._pending_cond:
            self._pending -= 1
            if not self._pending:
                self._pending_cond.notify_all()

    def _fallback_executor(self) -> ThreadPoolExecutor:
        pid = os.getpid()
        with self._pending_cond:
            if self._fallback is None or self._fallback_pid != pid:
                self._fallback = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tickwork-outcome")
                self._fallback_pid = pid
            return self._fallback

    def _not_finished(self, attempt: ClaimedAttempt, values: dict[str, Any]) -> None:
        options = attempt.options
        self.logger.warning(
            "Run %s was no longer RUNNING under worker %s (reaped?); outcome %s not recorded.",
            attempt.run_id,
            attempt.worker_id,
            values.get("status"),
            # Its own ids: a success's outcome is settled on whichever thread committed it.
            extra={
                "job_id": options.get("job_id"),
                "job_name": options.get("job_name"),
                "run_id": attempt.run_id,
                "attempt": options.get("attempt"),
                "worker_id": attempt.worker_id,
            },
        )

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
            self._not_finished(attempt, values)
