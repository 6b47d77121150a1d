"""The admin page: the model and index, a rebuild, keys, organisations, the audit chain,
retention. Each action is the use case the API's admin routes call."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from service.api.deps import AccessDep, AdminDep, MaintenanceDep, StateDep
from service.matching.actors import ROLES, Permission
from service.matching.views import SignedIn
from service.web.session import Poster, page_for, render, see_other

router = APIRouter(prefix="/admin", include_in_schema=False)
AdminVisitor = Annotated[SignedIn, page_for(Permission.ADMIN)]
RECENT_AUDIT = 15
NOTICES = {  # what a finished action says on the page it returns to
    "rebuilt": "The index was rebuilt and swapped in.",
    "org": "The organisation was created.",
    "revoked": "The key was revoked; its sessions have ended.",
}


@router.get("")
def admin_page(
    request: Request,
    visitor: AdminVisitor,
    access: AccessDep,
    admin: AdminDep,
    maintenance: MaintenanceDep,
    notice: Literal["rebuilt", "org", "revoked"] | None = None,
) -> Response:
    return _page(request, visitor, access, admin, maintenance, notice=NOTICES.get(notice or ""))


@router.post("/index/rebuild")
async def rebuild(visitor: Poster, maintenance: MaintenanceDep, state: StateDep) -> Response:
    await state.run(maintenance.rebuild_index, visitor.actor)
    return see_other("/admin?notice=rebuilt#index")


@router.post("/orgs")
def create_org(
    visitor: Poster, access: AccessDep, name: Annotated[str, Form(min_length=1, max_length=200)]
) -> Response:
    access.create_org(visitor.actor, name.strip())
    return see_other("/admin?notice=org#orgs")


@router.post("/keys")
def create_key(
    request: Request,
    visitor: Poster,
    access: AccessDep,
    admin: AdminDep,
    maintenance: MaintenanceDep,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    org_id: Annotated[str, Form(min_length=1, max_length=32)],
    roles: Annotated[list[str], Form()],
) -> Response:
    """The new key is shown on this answer only (never in a URL, never again)."""
    key, plaintext = access.create_key(visitor.actor, name.strip(), org_id, roles)
    created = {"view": key, "plaintext": plaintext}
    return _page(request, visitor, access, admin, maintenance, created=created, code=201)


@router.post("/keys/{key_id}/revoke")
def revoke_key(key_id: str, visitor: Poster, access: AccessDep) -> Response:
    access.revoke_key(visitor.actor, key_id)
    return see_other("/admin?notice=revoked#keys")


@router.post("/audit/verify")
def verify_audit(
    request: Request,
    visitor: Poster,
    access: AccessDep,
    admin: AdminDep,
    maintenance: MaintenanceDep,
) -> Response:
    check = admin.audit_verify(visitor.actor)
    return _page(request, visitor, access, admin, maintenance, audit_check=check)


@router.post("/retention")
def run_retention(
    request: Request,
    visitor: Poster,
    access: AccessDep,
    admin: AdminDep,
    maintenance: MaintenanceDep,
) -> Response:
    report = maintenance.run_retention(visitor.actor)
    return _page(request, visitor, access, admin, maintenance, retention=report)


def _page(
    request: Request,
    visitor: SignedIn,
    access: AccessDep,
    admin: AdminDep,
    maintenance: MaintenanceDep,
    code: int = 200,
    **results: object,
) -> Response:
    actor = visitor.actor
    orgs = access.orgs(actor)
    last_rebuild = admin.audit_recent(actor, 1, "index.rebuild")
    return render(
        request,
        "admin.html",
        visitor,
        code,
        info=maintenance.info(actor),
        index=maintenance.index_stats(actor),
        last_rebuild=last_rebuild[0] if last_rebuild else None,
        keys=access.keys(actor),
        orgs=orgs,
        org_names={o.id: o.name for o in orgs},
        roles=ROLES,
        audit=admin.audit_recent(actor, RECENT_AUDIT),
        **results,
    )
