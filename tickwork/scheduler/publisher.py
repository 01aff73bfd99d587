"""The scheduler's publisher: committed attempts out in batches, held until their instant.

Batches are built, encoded and marshalled before the fire instant and only sent at it; the
sending and the ``enqueued_at`` writes are :func:`tickwork.lifecycle.publish_committed_batches`
(publish after commit; a failed batch stays PENDING for the outbox sweep).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
from sqlalchemy import Engine

from tickwork.config import Settings
from tickwork.lifecycle import CommittedBatch, publish_committed_batches
from tickwork.messaging import build_message, prepare_publish
from tickwork.store.fires import PendingAttempt

logger = logging.getLogger(__name__)


class Publisher:
    """Parameters:
    settings: the settings (``publish_batch_size``).
    engine: the store.
    broker: the broker to publish on.
    node_id: for the log lines.
    """

    def __init__(
        self, settings: Settings, engine: Engine, broker: dramatiq.Broker, *, node_id: str = ""
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.broker = broker
        self.node_id = node_id
        #: ``time.monotonic()`` when the last call had its batches prepared (the ticker's lead).
        self.prepared_at = 0.0

    def publish(self, attempts: list[PendingAttempt], *, hold_until_due: bool = False) -> int:
        """Publish committed attempts in batches; returns how many were published.

        With ``hold_until_due`` an attempt is not published before its ``scheduled_for`` (rows
        written ahead of the instant): each batch is prepared first and sent at its instant.
        Each batch is durable on the broker before the next starts.
        """
        size = self.settings.publish_batch_size
        chunks: list[list[PendingAttempt]] = []
        start = 0
        while start < len(attempts):
            end = min(start + size, len(attempts))
            if hold_until_due:
                # Attempts are sorted by scheduled_for: a batch never mixes instants.
                due = attempts[start].scheduled_for
                end = next((i for i in range(start, end) if attempts[i].scheduled_for != due), end)
            chunks.append(attempts[start:end])
            start = end
        prepared: list[CommittedBatch] = []
        for chunk in chunks:
            try:
                batch = prepare_publish(self.broker, [self.message(a) for a in chunk])
            except Exception:
                logger.exception(
                    "preparing a publish failed; the outbox sweep will republish",
                    extra={"node_id": self.node_id, "run_id": chunk[0].run_id},
                )
                continue
            prepared.append(
                CommittedBatch(
                    [a.run_id for a in chunk],
                    batch,
                    not_before=chunk[0].scheduled_for if hold_until_due else None,
                )
            )
        self.prepared_at = time.monotonic()
        return len(
            publish_committed_batches(self.engine, self.broker, prepared, extra={"node_id": self.node_id})
        )

    def message(self, attempt: PendingAttempt) -> dramatiq.Message[Any]:
        return build_message(
            self.settings,
            attempt.job,
            run_id=attempt.run_id,
            attempt=attempt.attempt,
            scheduled_for=attempt.scheduled_for,
            arguments=attempt.arguments,
            trigger=attempt.trigger,
        )
