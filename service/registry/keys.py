"""Organisations and API keys (stored as HMACs; see ``service.matching.access``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.errors import NotFound
from service.registry.models import ApiKey, Organisation, WebSession


class KeyRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    # -- organisations ---------------------------------------------------------------------

    def add_org(self, name: str) -> Organisation:
        org = Organisation(name=name)
        self.s.add(org)
        self.s.flush()
        return org

    def org(self, org_id: str) -> Organisation:
        org = self.s.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} not found")
        return org

    def org_with_id(self, org_id: str) -> Organisation | None:
        return self.s.get(Organisation, org_id)

    def org_named(self, name: str) -> Organisation | None:
        return self.s.scalar(select(Organisation).where(Organisation.name == name))

    def orgs(self) -> list[Organisation]:
        return list(self.s.scalars(select(Organisation).order_by(Organisation.created_at)))

    # -- keys ------------------------------------------------------------------------------

    def add(self, row: ApiKey) -> ApiKey:
        self.s.add(row)
        self.s.flush()
        return row

    def by_key_id(self, key_id: str) -> ApiKey | None:
        return self.s.scalar(select(ApiKey).where(ApiKey.key_id == key_id))

    def all(self) -> list[ApiKey]:
        return list(self.s.scalars(select(ApiKey).order_by(ApiKey.id)))

    def names(self, key_ids: list[str]) -> dict[str, str]:
        rows = self.s.execute(select(ApiKey.key_id, ApiKey.name).where(ApiKey.key_id.in_(key_ids)))
        return {r[0]: r[1] for r in rows}

    def active_admin_exists(self) -> bool:
        rows = self.s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
        return any("admin" in r.role_set for r in rows)

    # -- web sessions ------------------------------------------------------------------------

    def add_session(self, row: WebSession) -> None:
        self.s.add(row)

    def session(self, session_id: str) -> tuple[WebSession, ApiKey] | None:
        row = self.s.execute(
            select(WebSession, ApiKey)
            .join(ApiKey, ApiKey.key_id == WebSession.key_id)
            .where(WebSession.id == session_id)
        ).first()
        return None if row is None else (row[0], row[1])

    def end_session(self, session_id: str) -> bool:
        done = self.s.execute(delete(WebSession).where(WebSession.id == session_id))
        return bool(done.rowcount)  # type: ignore[attr-defined]

    def end_expired_sessions(self, now: datetime) -> int:
        done = self.s.execute(delete(WebSession).where(WebSession.expires_at <= now))
        return int(done.rowcount)  # type: ignore[attr-defined]
