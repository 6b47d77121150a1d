"""API keys and organisations: who may call, and the organisation's webhook.

A key is a random secret shown once; only its HMAC-SHA-256 under the server's secret is
stored, so a copy of the database cannot be used to test guesses offline. The first 12 hex
digits of the HMAC are the key's public id (lookup, lists, audit); the full HMAC is compared
in constant time.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from service.errors import Conflict, InvalidInput, NotFound, Unauthorized
from service.matching.actors import ROLES, SYSTEM, Actor, Permission
from service.matching.egress import EgressPolicy
from service.matching.views import DeliveryView, KeyView, OrgView, SignedIn, copy_of
from service.registry.db import Database
from service.registry.models import ApiKey, Organisation, WebSession
from service.security import Sealer, api_key_digest

logger = logging.getLogger(__name__)

KEY_PREFIX = "hw_"
MIN_KEY_LENGTH = 24
MAX_KEY_LENGTH = 512
ADMIN_ORG = "Homeward administrators"


class AccessService:
    def __init__(self, db: Database, hmac_key: bytes, sealer: Sealer, egress: EgressPolicy) -> None:
        self.db = db
        self._hmac_key = hmac_key
        self._sealer = sealer
        self.egress = egress

    # -- callers ---------------------------------------------------------------------------

    def authenticate(self, key: str | None) -> Actor:
        """The caller behind a key; Unauthorized when it is missing, unknown, revoked or
        expired (one answer for all, so the reply tells nothing about which)."""
        if not key:
            raise Unauthorized("missing X-API-Key header", reason="missing_key")
        row = self._active_row(key)
        if row is None:
            raise Unauthorized("invalid, expired or revoked API key", reason="invalid_key")
        return Actor(row.key_id, row.org_id, row.role_set)

    def _active_row(self, key: str) -> ApiKey | None:
        if len(key) > MAX_KEY_LENGTH:
            return None
        digest = api_key_digest(self._hmac_key, key)
        with self.db.unit() as tx:
            row = tx.keys.by_key_id(digest[:12])
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
            return None
        return row if hmac.compare_digest(row.secret_hash, digest) else None

    def bootstrap_admin(self, configured: str | None) -> str | None:
        """Make sure an admin key exists. ``HOMEWARD_ADMIN_KEY`` is registered once; after
        that it is only checked (revoking it is final: it is never registered again, and a
        new admin key is not made for it). Without it, the first start creates an admin key
        and returns its plaintext, to be shown once."""
        with self.db.unit() as tx:
            if configured:
                if tx.keys.by_key_id(api_key_digest(self._hmac_key, configured)[:12]):
                    return None
            elif tx.keys.active_admin_exists():
                return None
            org = tx.keys.org_named(ADMIN_ORG) or tx.keys.add_org(ADMIN_ORG)
            name = "admin (HOMEWARD_ADMIN_KEY)" if configured else "first admin"
            row, key = self._new_key(name, org.id, ["admin"], None, configured)
            tx.keys.add(row)
            tx.audit.record(SYSTEM, "key.create", target=row.key_id)
        return None if configured else key

    # -- web sessions ----------------------------------------------------------------------------

    def sign_in(self, key: str, lifetime: timedelta) -> tuple[str, SignedIn]:
        """Exchange an API key for a server-side session: the cookie's token (shown to the
        browser only) and the session. Unauthorized exactly as ``authenticate``."""
        actor = self.authenticate(key)
        token = secrets.token_urlsafe(32)
        row = WebSession(
            id=self._session_id(token),
            key_id=actor.key_id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=datetime.now(UTC) + lifetime,
        )
        with self.db.unit() as tx:
            tx.keys.end_expired_sessions(datetime.now(UTC))
            tx.keys.add_session(row)
            tx.audit.record(actor, "session.start", target=actor.key_id)
        return token, self.session(token)

    def session(self, token: str | None) -> SignedIn:
        """The session behind a cookie's token; Unauthorized when it is missing, ended or
        expired, or its key was revoked or expired since."""
        if not token or len(token) > MAX_KEY_LENGTH:
            raise Unauthorized("please sign in", reason="no_session")
        now = datetime.now(UTC)
        ended = Unauthorized("your session has ended; please sign in", reason="no_session")
        with self.db.unit() as tx:
            found = tx.keys.session(self._session_id(token))
            if found is None:
                raise ended
            session, key = found
            usable = key.revoked_at is None and (key.expires_at is None or key.expires_at > now)
            if session.expires_at > now and usable:
                return SignedIn(
                    key_id=key.key_id,
                    key_name=key.name,
                    org_id=key.org_id,
                    org_name=tx.keys.org(key.org_id).name,
                    roles=sorted(key.role_set),
                    csrf_token=session.csrf_token,
                    expires_at=session.expires_at,
                )
            tx.keys.end_session(session.id)  # committed as the unit ends, before refusing
        raise ended

    def sign_out(self, token: str | None) -> None:
        """End the session on the server: its cookie is refused from now on."""
        if not token or len(token) > MAX_KEY_LENGTH:
            return
        with self.db.unit() as tx:
            found = tx.keys.session(self._session_id(token))
            if found and tx.keys.end_session(found[0].id):
                key = found[1]
                actor = Actor(key.key_id, key.org_id, key.role_set)
                tx.audit.record(actor, "session.end", target=key.key_id)

    def _session_id(self, token: str) -> str:
        return api_key_digest(self._hmac_key, "session:" + token)

    # -- organisations -----------------------------------------------------------------------

    def create_org(self, actor: Actor, name: str) -> OrgView:
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            if tx.keys.org_named(name) is not None:
                raise Conflict(f"an organisation named {name!r} exists")
            org = tx.keys.add_org(name)
            tx.audit.record(actor, "org.create", target=org.id)
            return copy_of(OrgView, org)

    def orgs(self, actor: Actor) -> list[OrgView]:
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            return [copy_of(OrgView, o) for o in tx.keys.orgs()]

    def find_org(self, actor: Actor, id_or_name: str) -> OrgView:
        """An organisation by id, else by exact name."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            org = tx.keys.org_with_id(id_or_name) or tx.keys.org_named(id_or_name)
            if org is None:
                raise NotFound(f"no organisation with id or name {id_or_name!r}")
            return copy_of(OrgView, org)

    def administrators(self, actor: Actor) -> OrgView:
        """The administrators' organisation (made on first use): where the CLI acts."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            org = tx.keys.org_named(ADMIN_ORG)
            if org is None:
                org = tx.keys.add_org(ADMIN_ORG)
                tx.audit.record(actor, "org.create", target=org.id)
            return copy_of(OrgView, org)

    # -- keys --------------------------------------------------------------------------------

    def create_key(
        self,
        actor: Actor,
        name: str,
        org_id: str,
        roles: Iterable[str],
        expires_at: datetime | None = None,
    ) -> tuple[KeyView, str]:
        """A new key: its record and its plaintext, which is shown once and never stored.
        An expiry without a time zone is taken as UTC."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            org = tx.keys.org(org_id)
            if "admin" in roles and org.name != ADMIN_ORG:
                raise InvalidInput(
                    f"the admin role reaches every organisation's records, so only keys of "
                    f"{ADMIN_ORG!r} may hold it"
                )
            row, key = self._new_key(name, org_id, roles, expires_at)
            tx.keys.add(row)
            detail = {"org": row.org_id, "roles": row.roles}
            tx.audit.record(actor, "key.create", target=row.key_id, detail=detail)
            return KeyView.of(row), key

    def _new_key(
        self,
        name: str,
        org_id: str,
        roles: Iterable[str],
        expires_at: datetime | None,
        key: str | None = None,
    ) -> tuple[ApiKey, str]:
        role_list = sorted(set(roles))
        unknown = set(role_list) - set(ROLES)
        if not role_list or unknown:
            raise InvalidInput(f"roles must be some of {', '.join(ROLES)}; got {sorted(unknown)}")
        if expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise InvalidInput("expires_at is in the past")
        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
            raise InvalidInput(
                f"an API key must be {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} characters"
            )
        digest = api_key_digest(self._hmac_key, key)
        row = ApiKey(
            key_id=digest[:12],
            org_id=org_id,
            name=name,
            roles=",".join(role_list),
            secret_hash=digest,
            expires_at=expires_at,
        )
        return row, key

    def keys(self, actor: Actor) -> list[KeyView]:
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            return [KeyView.of(k) for k in tx.keys.all()]

    def revoke_key(self, actor: Actor, key_id: str) -> KeyView:
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            row = tx.keys.by_key_id(key_id)
            if row is None:
                raise NotFound(f"no API key with id {key_id}")
            row.revoked_at = row.revoked_at or datetime.now(UTC)
            tx.audit.record(actor, "key.revoke", target=key_id)
            return KeyView.of(row)

    # -- the organisation's webhook ------------------------------------------------------------

    def set_webhook(self, actor: Actor, url: str | None) -> str | None:
        """Register (or clear, with None) the actor's organisation's webhook for confirmed
        candidates; returns the new signing secret, shown once."""
        actor.require(Permission.WEBHOOK)
        if url:
            self.egress.check(url)
        secret = "whsec_" + secrets.token_urlsafe(32) if url else None
        org_id = actor.org_id or ""
        with self.db.unit() as tx:
            org = tx.keys.org(org_id)
            org.webhook_url = url
            org.webhook_secret = self._sealer.seal(secret.encode(), org_id) if secret else None
            tx.audit.record(actor, "webhook.set", target=org_id)
        return secret

    def deliveries(self, actor: Actor, every_org: bool = False) -> list[DeliveryView]:
        """The delivery log: the actor's organisation's, or every one's (admins)."""
        actor.require(Permission.ADMIN if every_org else Permission.WEBHOOK)
        with self.db.unit() as tx:
            rows = tx.outbox.deliveries(None if every_org else actor.org_id)
            return [copy_of(DeliveryView, d) for d in rows]

    def webhook_secret(self, org: Organisation) -> bytes | None:
        return self._sealer.open(org.webhook_secret, org.id) if org.webhook_secret else None
