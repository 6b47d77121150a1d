"""The webhook outbox: events queued in the transaction that caused them, claimed by one
worker at a time, sent, and logged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from service.registry.models import Organisation, WebhookDelivery


class OutboxRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def enqueue(self, org_id: str, event: str, data: dict[str, object]) -> None:
        body = {"event": event, "created_at": datetime.now(UTC).isoformat(), "data": data}
        self.s.add(
            WebhookDelivery(org_id=org_id, event=event, payload=json.dumps(body, sort_keys=True))
        )

    def claim_due(self, lease_seconds: float, limit: int = 20) -> list[int]:
        """Lease up to ``limit`` due deliveries to the caller: rows another worker holds
        are skipped (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer at a
        time), and the lease keeps them from others until it runs out."""
        now = datetime.now(UTC)
        due = (
            (WebhookDelivery.status == "pending")
            & (WebhookDelivery.next_attempt_at <= now)
            & or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until <= now)
        )
        ids = list(
            self.s.scalars(
                select(WebhookDelivery.id)
                .where(due)
                .order_by(WebhookDelivery.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        claimed = []
        lease = now + timedelta(seconds=lease_seconds)
        for delivery_id in ids:  # the re-check makes a claim safe without row locks
            result = self.s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, due)
                .values(lease_until=lease)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(delivery_id)
        return claimed

    def delivery(self, delivery_id: int) -> tuple[WebhookDelivery, Organisation | None]:
        delivery = self.s.get(WebhookDelivery, delivery_id)
        assert delivery is not None, "a claimed delivery is never deleted"
        return delivery, self.s.get(Organisation, delivery.org_id)

    def count_by_state(self) -> dict[str, int]:
        query = select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
        return {status: int(n) for status, n in self.s.execute(query)}

    def deliveries(self, org_id: str | None, limit: int = 100) -> list[WebhookDelivery]:
        query = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
        if org_id is not None:
            query = query.where(WebhookDelivery.org_id == org_id)
        return list(self.s.scalars(query))
