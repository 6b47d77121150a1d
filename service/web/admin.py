"""The admin page: the model and index, a rebuild (a job the page follows), keys,
organisations, the audit chain, retention. Each action is the use case the API's admin
routes call."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import JSONResponse, Response

from service.api.deps import AccessDep, AdminDep, JobDep, MaintenanceDep
from service.api.schemas import JobOut
from service.matching.actors import ROLES, Permission
from service.matching.jobs import JobView
from service.matching.views import SignedIn
from service.web.session import Poster, page_for, render, see_other

router = APIRouter(prefix="/admin", include_in_schema=False)
AdminVisitor = Annotated[SignedIn, page_for(Permission.ADMIN)]
RECENT_AUDIT = 15
NOTICES = {  # what a finished action says on the page it returns to
    "rebuilt": "The index was rebuilt, checked and swapped in.",
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
    jobs: JobDep,
    notice: Literal["rebuilt", "org", "revoked"] | None = None,
) -> Response:
    return _page(
        request, visitor, access, admin, maintenance, jobs, notice=NOTICES.get(notice or "")
    )


@router.post("/index/rebuild")
def rebuild(
    visitor: Poster, jobs: JobDep, reembed: Annotated[str | None, Form()] = None
) -> Response:
    """Start the job; the page shows its progress (its script follows it, and a reload
    shows where it is without one)."""
    jobs.start(visitor.actor, "index.reembed" if reembed else "index.rebuild")
    return see_other("/admin#index")


@router.get("/jobs/{job_id}")
def job_state(
    job_id: Annotated[str, Path(max_length=32)], visitor: AdminVisitor, jobs: JobDep
) -> Response:
    """The job as JSON, for the page's script, with the sentences the page shows."""
    job = jobs.get(visitor.actor, job_id)
    body = JobOut.of(job).model_dump(mode="json")
    body.update(state=job_state_text(job), figures=job_figures_text(job))
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel")
def cancel_job(
    job_id: Annotated[str, Path(max_length=32)], visitor: Poster, jobs: JobDep
) -> Response:
    jobs.cancel(visitor.actor, job_id)
    return see_other("/admin#index")


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
    jobs: JobDep,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    org_id: Annotated[str, Form(min_length=1, max_length=32)],
    roles: Annotated[list[str], Form()],
) -> Response:
    """The new key is shown on this answer only (never in a URL, never again)."""
    key, plaintext = access.create_key(visitor.actor, name.strip(), org_id, roles)
    created = {"view": key, "plaintext": plaintext}
    return _page(request, visitor, access, admin, maintenance, jobs, created=created, code=201)


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
    jobs: JobDep,
) -> Response:
    check = admin.audit_verify(visitor.actor)
    return _page(request, visitor, access, admin, maintenance, jobs, audit_check=check)


@router.post("/retention")
def run_retention(
    request: Request,
    visitor: Poster,
    access: AccessDep,
    admin: AdminDep,
    maintenance: MaintenanceDep,
    jobs: JobDep,
) -> Response:
    report = maintenance.run_retention(visitor.actor)
    return _page(request, visitor, access, admin, maintenance, jobs, retention=report)


def _page(
    request: Request,
    visitor: SignedIn,
    access: AccessDep,
    admin: AdminDep,
    maintenance: MaintenanceDep,
    jobs: JobDep,
    code: int = 200,
    **results: object,
) -> Response:
    actor = visitor.actor
    orgs = access.orgs(actor)
    last_rebuild = admin.audit_recent(actor, 1, "index.rebuild")
    latest = jobs.recent(actor, 1)
    job = latest[0] if latest else None
    return render(
        request,
        "admin.html",
        visitor,
        code,
        info=maintenance.info(actor),
        index=maintenance.index_stats(actor),
        last_rebuild=last_rebuild[0] if last_rebuild else None,
        job=job,
        job_state=job_state_text(job) if job else "",
        job_figures=job_figures_text(job) if job else "",
        keys=access.keys(actor),
        orgs=orgs,
        org_names={o.id: o.name for o in orgs},
        roles=ROLES,
        audit=admin.audit_recent(actor, RECENT_AUDIT),
        **results,
    )


def job_state_text(job: JobView) -> str:
    """Where the job is, in a sentence (announced to screen readers when it changes)."""
    what = "Re-embedding and rebuild" if job.kind == "index.reembed" else "Rebuild"
    when = f" at {job.finished_at:%Y-%m-%d %H:%M} UTC" if job.finished_at else ""
    if job.status == "queued":
        return f"{what} queued; a worker starts it within a few seconds."
    if job.status == "running":
        if job.cancel_requested:
            return f"{what}: cancelling; the index is kept as it was."
        doing = {"embedding": "embedding the stored photos", "indexing": "indexing templates"}
        return f"{what} running: {doing.get(job.stage or '', 'starting')}."
    if job.status == "done":
        return f"{what} done{when}: the new index was checked and swapped in."
    return f"{what} {job.status}{when}; the index was kept as it was. {job.error or ''}".strip()


def job_figures_text(job: JobView) -> str:
    """The job's figures: progress while it runs, the check once done."""
    d = job.detail
    if job.status == "done" and d:
        return (
            f"{d.get('templates', 0):,} templates, generation {d.get('generation')}; "
            f"{d.get('found', 0)} of {d.get('exact_neighbours', 0)} exact top-10 templates of "
            f"{d.get('sample_queries', 0)} sample searches found."
        )
    if job.status != "running" or not job.total:
        return ""
    unit = "photos" if job.stage == "embedding" else "templates"
    pace = f", {job.rate:,.0f} a second" if job.rate else ""
    left = f", about {job.eta_seconds:,.0f} s left" if job.eta_seconds is not None else ""
    return f"{job.done:,} of {job.total:,} {unit}{pace}{left}."
