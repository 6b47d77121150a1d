"""Who acts, what their roles allow, and which organisation's records they reach."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from service.errors import Forbidden

ROLES = ("volunteer", "reviewer", "registry", "admin")


class Permission(StrEnum):
    INFO = "info"  # model, index size, limits
    CASES = "cases"  # manage the organisation's cases and photos, view its photos
    MATCH = "match"  # search the organisation's cases
    AGEING = "ageing"  # age a photo (posters, reviewers)
    SIGHTINGS = "sightings"  # send sightings, follow one's own
    REVIEW = "review"  # candidates routed to the organisation: view, decide
    WEBHOOK = "webhook"  # the organisation's webhook and its delivery log
    ADMIN = "admin"  # keys, organisations, index, export, audit, retention


GRANTS: dict[str, frozenset[Permission]] = {
    "volunteer": frozenset({Permission.INFO, Permission.SIGHTINGS}),
    "reviewer": frozenset({Permission.INFO, Permission.REVIEW, Permission.AGEING}),
    "registry": frozenset(
        {Permission.INFO, Permission.CASES, Permission.MATCH, Permission.AGEING, Permission.WEBHOOK}
    ),
    "admin": frozenset(Permission),
}


@dataclass(frozen=True)
class Actor:
    """Who acts: an API key (its id, organisation and roles) or the system itself."""

    key_id: str
    org_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def scope(self) -> str | None:
        """The organisation whose records this actor may touch; None (all) for admins.
        Another organisation's record answers 'not found', exactly like a missing one."""
        return None if self.is_admin else self.org_id

    def may(self, permission: Permission) -> bool:
        return any(permission in GRANTS.get(role, frozenset()) for role in self.roles)

    def require(self, permission: Permission) -> None:
        if not self.may(permission):
            roles = ", ".join(sorted(self.roles)) or "none"
            raise Forbidden(f"this key's roles ({roles}) do not allow {permission.value}")


SYSTEM = Actor("system", None, frozenset({"admin"}))
