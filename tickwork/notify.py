"""Delivery of webhook notifications from the ``notifications`` outbox.

The leading scheduler runs :meth:`Deliverer.deliver_due` on a thread of its own (never the
ticker's, never a worker's), so a slow or dead receiver delays nothing but other notifications.
Each notification is POSTed as recorded, signed with ``TICKWORK_NOTIFY_SECRET``
(``X-Tickwork-Signature: sha256=<hex HMAC-SHA256 of the body>``); a 2xx delivers it, anything
else is retried after ``TICKWORK_NOTIFY_BACKOFF_SECONDS`` doubling up to
``TICKWORK_NOTIFY_MAX_BACKOFF_SECONDS``, until ``TICKWORK_NOTIFY_DEADLINE_SECONDS`` after it was
recorded, when it ends FAILED with the last error. At-least-once: a scheduler that dies between
the POST and recording it sends it again.

The http deny list applies: the target's host is resolved at delivery and refused if any of its
addresses is in ``TICKWORK_HTTP_DENY_NETWORKS`` (or the always-denied ranges).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine

from tickwork.alerts import SIGNATURE_HEADER, delivery_delay, delivery_expired, sign
from tickwork.config import Settings
from tickwork.errors import ConfigError, ValidationError
from tickwork.spec import check_denied_host, request_host, validate_http_url
from tickwork.store.alerts import Due, due_notifications, settle_delivery
from tickwork.store.models import NotificationStatus, utcnow

logger = logging.getLogger(__name__)

USER_AGENT = "tickwork-notify/0.1"
#: Notifications one pass delivers at most (the next pass, a second later, takes the rest).
DEFAULT_BATCH = 100
#: Response text kept in ``last_error``.
ERROR_MAX_CHARS = 500


def check_notify_url(settings: Settings) -> None:
    """Refuse (:class:`ConfigError` naming ``TICKWORK_NOTIFY_URL``) a global target the http
    deny list forbids, or whose host is not a valid name; called where processes start."""
    if not settings.notify_url:
        return
    try:
        validate_http_url(settings.notify_url, settings.http_deny_networks, field="TICKWORK_NOTIFY_URL")
    except ValidationError as exc:
        raise ConfigError("TICKWORK_NOTIFY_URL", exc.reason) from None


class DeliveryError(Exception):
    """A notification was not accepted: the reason goes to ``last_error``."""


class Deliverer:
    """POSTs due notifications and records each attempt.

    Parameters:
      settings: the secret, timeouts, backoff, deadline and deny list.
      engine: the store holding the outbox.
      keep_going: checked between notifications (the scheduler passes "still leader").
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        keep_going: Callable[[], bool] = lambda: True,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.keep_going = keep_going
        self.batch = batch
        self._client: httpx.Client | None = None
        check_notify_url(settings)
        self._warned_unsigned = False

    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.settings.notify_timeout_seconds, follow_redirects=False, trust_env=False
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def deliver_due(self, *, now: datetime | None = None) -> int:
        """One pass over the due notifications; returns how many were delivered."""
        delivered = 0
        for due in due_notifications(self.engine, now=now or utcnow(), limit=self.batch):
            if not self.keep_going():
                break
            delivered += self.deliver(due)
        return delivered

    def deliver(self, due: Due) -> int:
        """POST one notification and record the outcome (1 if delivered)."""
        try:
            self._post(due)
        except DeliveryError as exc:
            self._retry_or_fail(due, str(exc))
            return 0
        settle_delivery(self.engine, due.id, seen_attempts=due.attempts, status=NotificationStatus.DELIVERED)
        logger.info("notification %s (%s) delivered to %s", due.id, due.event, due.target)
        return 1

    def _post(self, due: Due) -> None:
        body = due.payload.encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self.settings.notify_secret:
            headers[SIGNATURE_HEADER] = sign(body, self.settings.notify_secret)
        elif not self._warned_unsigned:
            logger.warning("TICKWORK_NOTIFY_SECRET is not set: notifications are sent unsigned")
            self._warned_unsigned = True
        try:
            self._check_target(due.target)
            response = self.client().post(due.target, content=body, headers=headers)
        except ValidationError as exc:
            raise DeliveryError(f"target refused: {exc.reason}") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]) from None
        if not 200 <= response.status_code < 300:
            text = response.text[:ERROR_MAX_CHARS]
            raise DeliveryError(f"HTTP {response.status_code}: {text}".rstrip(": "))

    def _check_target(self, url: str) -> None:
        parts = urlsplit(url)
        host = request_host(parts.hostname or "", "target")
        check_denied_host(host, self.settings.http_deny_networks, "target")
        try:
            infos = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return  # httpx reports the failure to resolve
        for info in infos:
            check_denied_host(str(info[4][0]), self.settings.http_deny_networks, "target")

    def _retry_or_fail(self, due: Due, error: str) -> None:
        now = utcnow()
        settings = self.settings
        delay = delivery_delay(
            due.attempts + 1,
            base_seconds=settings.notify_backoff_seconds,
            max_seconds=settings.notify_max_backoff_seconds,
        )
        retry_at = now + timedelta(seconds=delay)
        if delivery_expired(due.created_at, retry_at, deadline_seconds=settings.notify_deadline_seconds):
            settle_delivery(
                self.engine, due.id, seen_attempts=due.attempts, status=NotificationStatus.FAILED, error=error
            )
            logger.error(
                "notification %s (%s) to %s FAILED after %d attempts: %s",
                due.id,
                due.event,
                due.target,
                due.attempts + 1,
                error,
            )
            return
        settle_delivery(
            self.engine,
            due.id,
            seen_attempts=due.attempts,
            status=NotificationStatus.PENDING,
            error=error,
            next_attempt_at=retry_at,
        )
        logger.warning(
            "notification %s (%s) to %s not delivered (%s); retry in %.1f s",
            due.id,
            due.event,
            due.target,
            error,
            delay,
        )
