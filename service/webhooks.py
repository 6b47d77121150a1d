"""Webhooks: signed notifications to organisations, retried with backoff, with a log.

The body is signed with HMAC-SHA-256 over ``"<timestamp>.<body>"`` using the secret the
organisation received when it registered the webhook; receivers check
``X-Homeward-Signature: sha256=<hex>`` and reject old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.registry.db import Database
from service.registry.keys import ApiKeys
from service.registry.models import Organisation, WebhookDelivery
from service.settings import Settings

logger = logging.getLogger(__name__)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


class Webhooks:
    def __init__(self, db: Database, keys: ApiKeys, settings: Settings) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings
        self._wake = threading.Event()

    def enqueue(self, s: Session, org_id: str, event: str, data: dict[str, object]) -> None:
        """Queue an event inside the caller's transaction: it is sent only if that commits."""
        body = {"event": event, "created_at": datetime.now(UTC).isoformat(), "data": data}
        s.add(WebhookDelivery(org_id=org_id, event=event, payload=json.dumps(body, sort_keys=True)))
        self._wake.set()

    def deliveries(self, org_id: str | None, limit: int = 100) -> list[WebhookDelivery]:
        query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
        if org_id is not None:
            query = query.where(WebhookDelivery.org_id == org_id)
        with self.db.session() as s:
            return list(s.scalars(query))

    def deliver_due(self) -> int:
        """Try every pending delivery that is due; returns how many were tried."""
        now = datetime.now(UTC)
        with self.db.session() as s:
            due = list(
                s.scalars(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now
                    )
                )
            )
        for delivery_id in due:
            self._attempt(delivery_id)
        return len(due)

    def run(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """The delivery loop (a daemon thread in the server)."""
        while not stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # keep the loop alive; the delivery log holds the details
                logger.exception("webhook delivery loop failed; retrying")
            self._wake.wait(poll_seconds)
            self._wake.clear()

    def _attempt(self, delivery_id: int) -> None:
        with self.db.session() as s:
            delivery = s.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            org = s.get(Organisation, delivery.org_id)
            status, error = self._send(org, delivery)
            delivery.attempts += 1
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
        secret = self.keys.webhook_secret(org) if org is not None else None
        if org is None or not org.webhook_url or secret is None:
            return None, "the organisation has no webhook registered"
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
            with urllib.request.urlopen(
                request, timeout=self.settings.webhook_timeout_seconds
            ) as r:
                return int(r.status), None
        except urllib.error.HTTPError as err:
            return err.code, f"HTTP {err.code}"
        except (urllib.error.URLError, OSError) as err:
            return None, str(err)[:500]
