"""Administration (admins only) and an organisation's own webhook (registries)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from service.api.deps import (
    AccessDep,
    AdminDep,
    DuplicatesDep,
    EnrollmentDep,
    JobDep,
    MaintenanceDep,
    require,
)
from service.api.schemas import (
    AuditCheckOut,
    AuditEntryOut,
    CaseLinkOut,
    CaseLinkPageOut,
    DeliveryOut,
    DuplicatesOut,
    IndexStatsOut,
    JobOut,
    KeyCreated,
    KeyIn,
    KeyOut,
    LinkIn,
    OrgIn,
    OrgOut,
    RebuildIn,
    RetentionOut,
    WebhookIn,
    WebhookOut,
)
from service.matching.actors import Actor, Permission

router = APIRouter(prefix="/v1/admin", tags=["admin"])
org_router = APIRouter(prefix="/v1/org", tags=["organisation"])
Admin = Annotated[Actor, Depends(require(Permission.ADMIN))]
WebhookOwner = Annotated[Actor, Depends(require(Permission.WEBHOOK))]


@router.post("/orgs", status_code=201, response_model=OrgOut)
def create_org(body: OrgIn, access: AccessDep, actor: Admin) -> OrgOut:
    return OrgOut.of(access.create_org(actor, body.name))


@router.get("/orgs", response_model=list[OrgOut])
def list_orgs(access: AccessDep, actor: Admin) -> list[OrgOut]:
    return [OrgOut.of(o) for o in access.orgs(actor)]


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(body: KeyIn, access: AccessDep, actor: Admin) -> KeyCreated:
    row, key = access.create_key(actor, body.name, body.org_id, body.roles, body.expires_at)
    return KeyCreated(**KeyOut.of(row).model_dump(), key=key)


@router.get("/keys", response_model=list[KeyOut])
def list_keys(access: AccessDep, actor: Admin) -> list[KeyOut]:
    return [KeyOut.of(k) for k in access.keys(actor)]


@router.delete("/keys/{key_id}", response_model=KeyOut)
def revoke_key(key_id: str, access: AccessDep, actor: Admin) -> KeyOut:
    return KeyOut.of(access.revoke_key(actor, key_id))


@router.get("/index", response_model=IndexStatsOut)
def index_stats(maintenance: MaintenanceDep, actor: Admin) -> IndexStatsOut:
    return IndexStatsOut.of(maintenance.index_stats(actor))


@router.post("/index/rebuild", status_code=202, response_model=JobOut)
def index_rebuild(jobs: JobDep, actor: Admin, body: RebuildIn | None = None) -> JobOut:
    """Start a job: a new index generation from the stored templates (or, with reembed,
    from the stored photos embedded again by the current model), built beside the live
    one, checked against the registry and exact search, then swapped in; searches go on
    meanwhile. Follow it at /v1/admin/jobs/{id}. 409 while another index job runs."""
    kind = "index.reembed" if body is not None and body.reembed else "index.rebuild"
    return JobOut.of(jobs.start(actor, kind))


@router.get("/jobs", response_model=list[JobOut])
def recent_jobs(
    jobs: JobDep, actor: Admin, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> list[JobOut]:
    """The latest index jobs, newest first."""
    return [JobOut.of(j) for j in jobs.recent(actor, limit)]


@router.get("/jobs/{job_id}", response_model=JobOut)
def job(job_id: Annotated[str, Path(max_length=32)], jobs: JobDep, actor: Admin) -> JobOut:
    """A job's state, progress (done of total, rate, ETA) and, once over, its outcome."""
    return JobOut.of(jobs.get(actor, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: Annotated[str, Path(max_length=32)], jobs: JobDep, actor: Admin) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its next progress report.
    Either way the live index stays as it was."""
    return JobOut.of(jobs.cancel(actor, job_id))


@router.get("/export")
def export(admin: AdminDep, actor: Admin) -> dict[str, Any]:
    """Every case with its templates (embeddings, base64 float32): admins only, audited."""
    return admin.export(actor)


@router.get("/audit", response_model=list[AuditEntryOut])
def audit_recent(
    admin: AdminDep,
    actor: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(max_length=40)] = None,
) -> list[AuditEntryOut]:
    return [AuditEntryOut.of(r) for r in admin.audit_recent(actor, limit, action)]


@router.get("/audit/verify", response_model=AuditCheckOut)
def audit_verify(admin: AdminDep, actor: Admin) -> AuditCheckOut:
    return AuditCheckOut.of(admin.audit_verify(actor))


@router.post("/retention/run", response_model=RetentionOut)
def retention(maintenance: MaintenanceDep, actor: Admin) -> RetentionOut:
    return RetentionOut.of(maintenance.run_retention(actor))


@router.post("/ageing/refresh")
def ageing_refresh(enrollment: EnrollmentDep, actor: Admin) -> dict[str, int]:
    """Re-age case photos whose aged templates no longer match the child's age today."""
    return {"photos_refreshed": enrollment.refresh_aged(actor)}


@router.get("/webhooks/deliveries", response_model=list[DeliveryOut])
def all_deliveries(access: AccessDep, actor: Admin) -> list[DeliveryOut]:
    return [DeliveryOut.of(d) for d in access.deliveries(actor, every_org=True)]


@router.get("/duplicates", response_model=DuplicatesOut)
def duplicates(
    dups: DuplicatesDep,
    actor: Admin,
    min_score: Annotated[
        float | None, Query(ge=-1, le=1, description="only raises the calibrated threshold")
    ] = None,
    same_org: Annotated[bool, Query(description="also pairs within one organisation")] = False,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> DuplicatesOut:
    """Pairs of cases, across organisations, whose photos score at or above the calibrated
    threshold: possible duplicates for people to link, strongest first. Audited."""
    return DuplicatesOut.of(dups.find(actor, min_score, same_org, offset, limit))


@router.post("/duplicates/links", status_code=201, response_model=CaseLinkOut)
def link_cases(body: LinkIn, dups: DuplicatesDep, actor: Admin) -> CaseLinkOut:
    """Record that two cases are the same child (audited)."""
    return CaseLinkOut.of(dups.link(actor, body.case_a, body.case_b, body.note))


@router.get("/duplicates/links", response_model=CaseLinkPageOut)
def case_links(
    dups: DuplicatesDep,
    actor: Admin,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> CaseLinkPageOut:
    return CaseLinkPageOut.of(dups.links(actor, offset, limit))


@router.delete("/duplicates/links/{link_id}", status_code=204)
def unlink_cases(
    link_id: Annotated[int, Path(ge=1, le=2**31 - 1)], dups: DuplicatesDep, actor: Admin
) -> Response:
    dups.unlink(actor, link_id)
    return Response(status_code=204)


@org_router.put("/webhook", response_model=WebhookOut)
def set_webhook(body: WebhookIn, access: AccessDep, actor: WebhookOwner) -> WebhookOut:
    """Register (or clear, with url null) the organisation's webhook for confirmed
    candidates; the signing secret is returned once."""
    return WebhookOut(url=body.url, secret=access.set_webhook(actor, body.url))


@org_router.get("/webhook/deliveries", response_model=list[DeliveryOut])
def own_deliveries(access: AccessDep, actor: WebhookOwner) -> list[DeliveryOut]:
    return [DeliveryOut.of(d) for d in access.deliveries(actor)]
