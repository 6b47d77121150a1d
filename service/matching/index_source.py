"""The registry as the vector index's source: templates with what filters need of their
case (organisation, sex, estimated birth), and the change log the index follows."""

from __future__ import annotations

from collections.abc import Iterator

from service.matching.ages import birth_day
from service.registry.db import Database
from service.registry.templates import TemplateRow
from service.search.port import Change, IndexedTemplate, TemplateAttributes


class RegistryTemplates:
    """Implements ``service.search.port.TemplateSource``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def watermark(self, model_id: str) -> int:
        with self.db.unit() as tx:
            return tx.templates.watermark(model_id)

    def template_count(self, model_id: str) -> int:
        with self.db.unit() as tx:
            return tx.templates.count(model_id)

    def changes_since(self, model_id: str, seq: int, limit: int = 10_000) -> list[Change]:
        with self.db.unit() as tx:
            rows = tx.templates.changes_since(model_id, seq, limit)
        return [
            Change(r.seq, r.template_id, r.op, None if r.template is None else indexed(r.template))
            for r in rows
        ]

    def iter_templates(self, model_id: str, block: int = 20_000) -> Iterator[list[IndexedTemplate]]:
        last = -1
        while True:
            with self.db.unit() as tx:
                rows = tx.templates.block(model_id, last, block)
            if not rows:
                return
            last = rows[-1].id
            yield [indexed(r) for r in rows]


def indexed(row: TemplateRow) -> IndexedTemplate:
    born = birth_day(row.birth_date, row.age_at_disappearance, row.missing_since)
    return IndexedTemplate(row.id, row.vector, TemplateAttributes(row.org_id, row.sex, born))
