"""Administration (admins only) and an organisation's own webhook (registries)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from service.api.access import Permission
from service.api.deps import StateDep, require
from service.api.schemas import (
    DeliveryOut,
    KeyCreated,
    KeyIn,
    KeyOut,
    OrgIn,
    OrgOut,
    WebhookIn,
    WebhookOut,
)
from service.audit import Actor
from service.export import export_gallery
from service.registry.models import ApiKey, Organisation, WebhookDelivery
from service.retention import run_retention

router = APIRouter(prefix="/v1/admin", tags=["admin"])
org_router = APIRouter(prefix="/v1/org", tags=["organisation"])
Admin = Annotated[Actor, Depends(require(Permission.ADMIN))]
WebhookOwner = Annotated[Actor, Depends(require(Permission.WEBHOOK))]


def _org(o: Organisation) -> OrgOut:
    return OrgOut(id=o.id, name=o.name, webhook_url=o.webhook_url, created_at=o.created_at)


def _key(k: ApiKey) -> dict[str, Any]:
    return {
        "key_id": k.key_id,
        "name": k.name,
        "org_id": k.org_id,
        "roles": sorted(k.role_set),
        "created_at": k.created_at,
        "expires_at": k.expires_at,
        "revoked_at": k.revoked_at,
    }


def _delivery(d: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=d.id,
        org_id=d.org_id,
        event=d.event,
        status=d.status,
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        created_at=d.created_at,
        delivered_at=d.delivered_at,
    )


@router.post("/orgs", status_code=201, response_model=OrgOut)
async def create_org(body: OrgIn, state: StateDep, actor: Admin) -> OrgOut:
    org = await state.run(state.services.keys.create_org, body.name)
    await state.run(lambda: state.services.audit.record(actor, "org.create", target=org.id))
    return _org(org)


@router.get("/orgs", response_model=list[OrgOut])
async def list_orgs(state: StateDep, _actor: Admin) -> list[OrgOut]:
    return [_org(o) for o in await state.run(state.services.keys.list_orgs)]


@router.post("/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyIn, state: StateDep, actor: Admin) -> KeyCreated:
    keys, audit = state.services.keys, state.services.audit
    row, key = await state.run(keys.create, body.name, body.org_id, body.roles, body.expires_at)
    await state.run(
        lambda: audit.record(
            actor, "key.create", target=row.key_id, detail={"org": row.org_id, "roles": row.roles}
        )
    )
    return KeyCreated(**_key(row), key=key)


@router.get("/keys", response_model=list[KeyOut])
async def list_keys(state: StateDep, _actor: Admin) -> list[KeyOut]:
    return [KeyOut(**_key(k)) for k in await state.run(state.services.keys.list)]


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def revoke_key(key_id: str, state: StateDep, actor: Admin) -> KeyOut:
    row = await state.run(state.services.keys.revoke, key_id)
    await state.run(lambda: state.services.audit.record(actor, "key.revoke", target=key_id))
    return KeyOut(**_key(row))


@router.get("/index")
async def index_stats(state: StateDep, _actor: Admin) -> dict[str, Any]:
    keeper = state.services.homeward.keeper
    return {
        "model_id": keeper.model_id,
        "dimension": keeper.dimension,
        "templates": len(keeper.index),
        "generation": keeper.generation,
        "opened": keeper.last_open,
    }


@router.post("/index/rebuild")
async def index_rebuild(state: StateDep, actor: Admin) -> dict[str, Any]:
    keeper = state.services.homeward.keeper
    await state.run(keeper.rebuild)
    await state.run(keeper.save)
    await state.run(lambda: state.services.audit.record(actor, "index.rebuild"))
    return {"templates": len(keeper.index), "generation": keeper.generation}


@router.get("/export")
async def export(state: StateDep, actor: Admin) -> dict[str, Any]:
    """Every case with its templates (embeddings, base64 float32): admins only, audited."""
    return await state.run(export_gallery, state.services.homeward, actor)


@router.get("/audit")
async def audit_recent(
    state: StateDep,
    _actor: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    action: Annotated[str | None, Query(max_length=40)] = None,
) -> list[dict[str, Any]]:
    records = await state.run(state.services.audit.recent, limit, action)
    return [
        {
            "seq": r.seq,
            "at": r.at,
            "key_id": r.key_id,
            "org_id": r.org_id,
            "action": r.action,
            "target": r.target,
            "input_sha256": r.input_sha256,
            "result_ids": r.result_ids,
            "hash": r.hash,
        }
        for r in records
    ]


@router.get("/audit/verify")
async def audit_verify(state: StateDep, _actor: Admin) -> dict[str, Any]:
    result = await state.run(state.services.audit.verify)
    return {"ok": result.ok, "records": result.records, "problems": result.problems}


@router.post("/retention/run")
async def retention(state: StateDep, _actor: Admin) -> dict[str, int]:
    report = await state.run(run_retention, state.services.homeward)
    return {"cases_purged": report.cases_purged, "sightings_purged": report.sightings_purged}


@router.post("/ageing/refresh")
async def ageing_refresh(state: StateDep, actor: Admin) -> dict[str, int]:
    """Re-age case photos whose aged templates no longer match the child's age today."""
    return {"photos_refreshed": await state.run(state.services.homeward.refresh_aged, actor)}


@router.get("/webhooks/deliveries", response_model=list[DeliveryOut])
async def all_deliveries(state: StateDep, _actor: Admin) -> list[DeliveryOut]:
    return [_delivery(d) for d in await state.run(state.services.webhooks.deliveries, None)]


@org_router.put("/webhook", response_model=WebhookOut)
async def set_webhook(body: WebhookIn, state: StateDep, actor: WebhookOwner) -> WebhookOut:
    """Register (or clear, with url null) the organisation's webhook for confirmed
    candidates; the signing secret is returned once."""
    secret = await state.run(state.services.keys.set_webhook, actor.org_id or "", body.url)
    await state.run(lambda: state.services.audit.record(actor, "webhook.set", target=actor.org_id))
    return WebhookOut(url=body.url, secret=secret)


@org_router.get("/webhook/deliveries", response_model=list[DeliveryOut])
async def own_deliveries(state: StateDep, actor: WebhookOwner) -> list[DeliveryOut]:
    deliveries = await state.run(state.services.webhooks.deliveries, actor.org_id)
    return [_delivery(d) for d in deliveries]
