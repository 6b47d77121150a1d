"""API keys: random secrets shown once, stored only as SHA-256 hashes, compared in constant time.

A key is high-entropy (256 random bits), so a plain SHA-256 is not open to guessing; the
first 12 hex digits of the hash are the key's public id, used to look it up and to name it
in lists and logs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import select

from service.errors import Conflict, InvalidInput, NotFound
from service.registry.db import Database
from service.registry.models import ApiKey

ROLES = ("admin", "registry")
KEY_PREFIX = "hw_"
MIN_KEY_LENGTH = 24


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, role: str, key: str | None = None) -> tuple[ApiKey, str]:
        """A new key; returns the row and the plaintext, which is never stored."""
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        if len(key) < MIN_KEY_LENGTH:
            raise InvalidInput(f"an API key must be at least {MIN_KEY_LENGTH} characters")
        digest = _digest(key)
        row = ApiKey(key_id=digest[:12], name=name, role=role, secret_hash=digest)
        with self.db.session() as s:
            if s.scalar(select(ApiKey).where(ApiKey.key_id == row.key_id)):
                raise Conflict("that key already exists")
            s.add(row)
        return row, key

    def verify(self, key: str) -> ApiKey | None:
        """The active key row for this plaintext, or None."""
        if not key or len(key) > 512:
            return None
        digest = _digest(key)
        with self.db.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_id == digest[:12]))
        if row is None or row.revoked_at is not None:
            return None
        return row if hmac.compare_digest(row.secret_hash, digest) else None

    def list(self) -> list[ApiKey]:
        with self.db.session() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.id)))

    def revoke(self, key_id: str) -> ApiKey:
        with self.db.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
            if row is None:
                raise NotFound(f"no API key with id {key_id}")
            row.revoked_at = row.revoked_at or datetime.now(UTC)
            return row

    def has_admin(self) -> bool:
        with self.db.session() as s:
            return (
                s.scalar(
                    select(ApiKey.id).where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
                )
                is not None
            )

    def bootstrap_admin(self, configured: str | None) -> str | None:
        """Make sure an admin key exists. With ``HOMEWARD_ADMIN_KEY`` set, that key is the
        admin key; otherwise the first start creates one and returns its plaintext (to be
        shown once)."""
        if configured:
            if self.verify(configured) is None:
                self.create("admin (HOMEWARD_ADMIN_KEY)", "admin", configured)
            return None
        if self.has_admin():
            return None
        return self.create("first admin", "admin")[1]
