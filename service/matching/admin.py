"""Administration that needs no face model: the audit log and the gallery export."""

from __future__ import annotations

import base64
from typing import Any

from service.matching.actors import Actor, Permission
from service.matching.views import AuditCheck, AuditEntry, copy_of
from service.registry.db import Database


class AdminService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def export(self, actor: Actor) -> dict[str, Any]:
        """Every case with its templates (embeddings, base64 float32): the only place
        embeddings leave the service; admins only, audited."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            cases = tx.cases.for_export()
            body = {
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
                ]
            }
            tx.audit.record(actor, "export", results=[c.id for c in cases])
        return body

    def audit_recent(
        self, actor: Actor, limit: int = 100, action: str | None = None
    ) -> list[AuditEntry]:
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            return [copy_of(AuditEntry, r) for r in tx.audit.recent(limit, action)]

    def note_restore(self, actor: Actor, archive: str, taken_at: str) -> None:
        """The audit record of a restore, in the restored registry's own chain."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            tx.audit.record(actor, "restore", detail={"archive": archive, "taken_at": taken_at})

    def audit_verify(self, actor: Actor) -> AuditCheck:
        """Every record's hash and the chain: anything edited or removed is a problem."""
        actor.require(Permission.ADMIN)
        with self.db.unit() as tx:
            result = tx.audit.verify()
        return AuditCheck(result.ok, result.records, result.problems)
