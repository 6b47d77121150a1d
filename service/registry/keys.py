"""Organisations and API keys.

A key is a random secret shown once; only its HMAC-SHA-256 under the server's secret is
stored, so a copy of the database cannot be used to test guesses offline. The first 12 hex
digits of the HMAC are the key's public id (lookup, lists, audit); the full HMAC is compared
in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.errors import Conflict, InvalidInput, NotFound
from service.registry.db import Database
from service.registry.models import ApiKey, Organisation
from service.security import Sealer, api_key_digest

ROLES = ("volunteer", "reviewer", "registry", "admin")
KEY_PREFIX = "hw_"
MIN_KEY_LENGTH = 24
ADMIN_ORG = "Homeward administrators"


class ApiKeys:
    def __init__(self, db: Database, hmac_key: bytes, sealer: Sealer) -> None:
        self.db = db
        self._hmac_key = hmac_key
        self._sealer = sealer

    # -- organisations -----------------------------------------------------------------

    def create_org(self, name: str) -> Organisation:
        org = Organisation(name=name)
        try:
            with self.db.session() as s:
                s.add(org)
        except IntegrityError as err:
            raise Conflict(f"an organisation named {name!r} exists") from err
        return org

    def get_org(self, org_id: str) -> Organisation:
        with self.db.session() as s:
            org = s.get(Organisation, org_id)
            if org is None:
                raise NotFound(f"organisation {org_id} not found")
            return org

    def list_orgs(self) -> list[Organisation]:
        with self.db.session() as s:
            return list(s.scalars(select(Organisation).order_by(Organisation.created_at)))

    def set_webhook(self, org_id: str, url: str | None) -> str | None:
        """Register (or clear) the org's webhook; returns the new signing secret, once."""
        secret = "whsec_" + secrets.token_urlsafe(32) if url else None
        with self.db.session() as s:
            org = s.get(Organisation, org_id)
            if org is None:
                raise NotFound(f"organisation {org_id} not found")
            org.webhook_url = url
            org.webhook_secret = self._sealer.seal(secret.encode(), org_id) if secret else None
        return secret

    def webhook_secret(self, org: Organisation) -> bytes | None:
        return self._sealer.open(org.webhook_secret, org.id) if org.webhook_secret else None

    # -- keys --------------------------------------------------------------------------

    def create(
        self,
        name: str,
        org_id: str,
        roles: Iterable[str],
        expires_at: datetime | None = None,
        key: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key; returns the row and the plaintext, which is never stored."""
        role_list = sorted(set(roles))
        unknown = set(role_list) - set(ROLES)
        if not role_list or unknown:
            raise InvalidInput(f"roles must be some of {', '.join(ROLES)}; got {sorted(unknown)}")
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise InvalidInput("expires_at is in the past")
        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        if len(key) < MIN_KEY_LENGTH:
            raise InvalidInput(f"an API key must be at least {MIN_KEY_LENGTH} characters")
        self.get_org(org_id)
        digest = api_key_digest(self._hmac_key, key)
        row = ApiKey(
            key_id=digest[:12],
            org_id=org_id,
            name=name,
            roles=",".join(role_list),
            secret_hash=digest,
            expires_at=expires_at,
        )
        try:
            with self.db.session() as s:
                s.add(row)
        except IntegrityError as err:
            raise Conflict("that key already exists") from err
        return row, key

    def verify(self, key: str) -> ApiKey | None:
        """The active key row for this plaintext, or None (unknown, revoked or expired)."""
        if not key or len(key) > 512:
            return None
        digest = api_key_digest(self._hmac_key, key)
        with self.db.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_id == digest[:12]))
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
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

    def bootstrap_admin(self, configured: str | None) -> str | None:
        """Make sure an admin key exists. With ``HOMEWARD_ADMIN_KEY`` set, that key is the
        admin key; otherwise the first start creates one and returns its plaintext (to be
        shown once)."""
        if configured and self.verify(configured) is not None:
            return None
        if not configured and self._has_admin():
            return None
        org = self._admin_org()
        if configured:
            self.create("admin (HOMEWARD_ADMIN_KEY)", org.id, ["admin"], key=configured)
            return None
        return self.create("first admin", org.id, ["admin"])[1]

    def _has_admin(self) -> bool:
        with self.db.session() as s:
            rows = s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
            return any("admin" in r.role_set for r in rows)

    def _admin_org(self) -> Organisation:
        with self.db.session() as s:
            org = s.scalar(select(Organisation).where(Organisation.name == ADMIN_ORG))
        return org or self.create_org(ADMIN_ORG)
