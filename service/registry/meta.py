"""Small facts about this registry (the audit chain's head, the photo key fingerprint)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.registry.models import Meta


class MetaRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get(self, key: str) -> str | None:
        row = self.s.get(Meta, key)
        return None if row is None else row.value

    def set_default(self, key: str, value: str) -> str:
        """The stored value, storing ``value`` first when there is none."""
        row = self.s.get(Meta, key)
        if row is None:
            self.s.add(Meta(key=key, value=value))
            self.s.flush()
            return value
        return row.value
