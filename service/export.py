"""The admin export: cases with their templates. The only place embeddings leave."""

from __future__ import annotations

import base64
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from service.audit import Actor
from service.matching import Homeward
from service.registry.models import Case, Photo


def export_gallery(homeward: Homeward, actor: Actor) -> dict[str, Any]:
    with homeward.registry.db.session() as s:
        cases = list(
            s.scalars(
                select(Case)
                .options(selectinload(Case.photos).selectinload(Photo.templates))
                .order_by(Case.created_at)
            )
        )
        body: dict[str, Any] = {
            "model_id": homeward.model_id,
            "cases": [
                {
                    "id": c.id,
                    "org_id": c.org_id,
                    "external_ref": c.external_ref,
                    "status": c.status,
                    "templates": [
                        {
                            "id": t.id,
                            "photo_id": p.id,
                            "model_id": t.model_id,
                            "kind": t.kind,
                            "vector_f32_b64": base64.b64encode(t.vector).decode(),
                        }
                        for p in c.photos
                        for t in p.templates
                    ],
                }
                for c in cases
            ],
        }
    homeward.audit.record(actor, "export", results=[c.id for c in cases])
    return body
