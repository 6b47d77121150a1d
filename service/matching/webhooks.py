"""Webhooks: signed notifications to organisations, retried with backoff, with a log.

The body is signed with HMAC-SHA-256 over ``"<timestamp>.<body>"`` using the secret the
organisation received when it registered the webhook; receivers check
``X-Homeward-Signature: sha256=<hex>`` and reject old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from service.errors import InvalidInput
from service.matching.access import AccessService
from service.registry.db import Database
from service.registry.models import Organisation, WebhookDelivery
from service.settings import Settings

logger = logging.getLogger(__name__)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


class WebhookSender:
    """Sends the outbox's due deliveries. Each is claimed first (a lease in the database),
    so several workers never send the same one."""

    def __init__(self, settings: Settings, db: Database, access: AccessService) -> None:
        self.settings = settings
        self.db = db
        self.access = access

    @property
    def lease_seconds(self) -> float:
        return self.settings.webhook_timeout_seconds * 2 + 5

    def deliver_due(self) -> int:
        """Claim and try every due delivery; returns how many were tried."""
        with self.db.unit() as tx:
            claimed = tx.outbox.claim_due(self.lease_seconds)
        for delivery_id in claimed:
            self._attempt(delivery_id)
        return len(claimed)

    def _attempt(self, delivery_id: int) -> None:
        with self.db.unit() as tx:
            delivery, org = tx.outbox.delivery(delivery_id)
        status, error = self._send(org, delivery)
        with self.db.unit() as tx:
            delivery, _ = tx.outbox.delivery(delivery_id)
            self._record(delivery, status, error)

    def _record(self, delivery: WebhookDelivery, status: int | None, error: str | None) -> None:
        delivery.attempts += 1
        delivery.lease_until = None
        delivery.last_status_code, delivery.last_error = status, error
        if status is not None and 200 <= status < 300:
            delivery.status, delivery.delivered_at = "delivered", datetime.now(UTC)
        elif delivery.attempts >= self.settings.webhook_max_attempts:
            delivery.status = "failed"
            logger.warning(
                "webhook delivery %d to %s failed for good: %s",
                delivery.id,
                delivery.org_id,
                error or status,
            )
        else:
            backoff = self.settings.webhook_backoff_seconds * 2 ** (delivery.attempts - 1)
            delivery.next_attempt_at = datetime.now(UTC) + timedelta(seconds=backoff)

    def _send(
        self, org: Organisation | None, delivery: WebhookDelivery
    ) -> tuple[int | None, str | None]:
        secret = self.access.webhook_secret(org) if org is not None else None
        if org is None or not org.webhook_url or secret is None:
            return None, "the organisation has no webhook registered"
        try:
            self.access.egress.check(org.webhook_url)  # again: DNS may have changed
        except InvalidInput:
            return None, "the webhook's address is not allowed"
        body = delivery.payload.encode()
        timestamp = str(int(time.time()))
        request = urllib.request.Request(
            org.webhook_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-Homeward-Event": delivery.event,
                "X-Homeward-Delivery": str(delivery.id),
                "X-Homeward-Timestamp": timestamp,
                "X-Homeward-Signature": signature(secret, timestamp, body),
            },
        )
        try:
            with _OPENER.open(request, timeout=self.settings.webhook_timeout_seconds) as r:
                return int(r.status), None
        except urllib.error.HTTPError as err:  # redirects included: they are not followed
            return err.code, f"HTTP {err.code}"
        except (urllib.error.URLError, OSError):
            # The log says only that it failed: its details would map the network behind.
            return None, "the webhook could not be reached"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)
