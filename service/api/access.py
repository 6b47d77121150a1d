"""Who may do what: every route names one permission, and this table says which roles
hold it. Ownership (an organisation's own cases, a volunteer's own sightings, candidates
routed to a reviewer's organisation) is enforced by the use cases, answering 404."""

from __future__ import annotations

from enum import StrEnum


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


def allowed(roles: frozenset[str], permission: Permission) -> bool:
    return any(permission in GRANTS.get(role, frozenset()) for role in roles)
