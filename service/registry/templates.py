"""Face templates and the append-only change log that the vector index follows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, overload

import numpy as np
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from service.registry.models import Case, Photo, Template, TemplateChange


@dataclass(frozen=True)
class NewTemplate:
    model_id: str
    vector: np.ndarray
    kind: str = "original"
    age: float | None = None
    generator: str | None = None


@dataclass(frozen=True)
class TemplateRow:
    """A template with what a search filter needs of its case."""

    id: int
    vector: bytes  # float32, little-endian
    org_id: str
    sex: str
    birth_date: date | None
    age_at_disappearance: float | None
    missing_since: date | None


@dataclass(frozen=True)
class ChangeRow:
    seq: int
    template_id: int
    op: str  # "add" | "remove"
    template: TemplateRow | None  # None for removals, and for adds whose template is gone


@dataclass(frozen=True)
class Owner:
    """Whose a template is: for turning index hits into ranked cases."""

    case_id: str
    photo_id: str
    kind: str
    org_id: str
    external_ref: str | None


_ROW_COLUMNS = (
    Template.id,
    Template.vector,
    Case.org_id,
    Case.sex,
    Case.birth_date,
    Case.age_at_disappearance,
    Case.missing_since,
)


class TemplateRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, photo: Photo, templates: Sequence[NewTemplate]) -> None:
        rows = [
            Template(
                case_id=photo.case_id,
                photo_id=photo.id,
                model_id=t.model_id,
                kind=t.kind,
                age=t.age,
                generator=t.generator,
                vector=np.ascontiguousarray(t.vector, dtype="<f4").tobytes(),
            )
            for t in templates
        ]
        self.s.add_all(rows)
        self.s.flush()
        self.s.add_all(
            TemplateChange(model_id=t.model_id, template_id=t.id, op="add") for t in rows
        )

    def replace_aged(self, photo: Photo, templates: Sequence[NewTemplate]) -> None:
        remove_templates(self.s, (Template.photo_id == photo.id) & (Template.kind == "aged"))
        self.add(photo, templates)

    def case_changed(self, case_id: str) -> None:
        """Log the case's templates again: what the index filters on (sex, dates) changed."""
        rows = self.s.execute(
            select(Template.id, Template.model_id).where(Template.case_id == case_id)
        )
        self.s.add_all(TemplateChange(model_id=m, template_id=i, op="add") for i, m in rows)

    def owners(self, template_ids: Sequence[int]) -> dict[int, Owner]:
        rows = self.s.execute(
            select(
                Template.id,
                Template.case_id,
                Template.photo_id,
                Template.kind,
                Case.org_id,
                Case.external_ref,
            )
            .join(Case, Case.id == Template.case_id)
            .where(Template.id.in_(list(template_ids)))
        )
        return {r[0]: Owner(*r[1:]) for r in rows}

    def count(self, model_id: str) -> int:
        query = select(func.count(Template.id)).where(Template.model_id == model_id)
        return int(self.s.scalar(query) or 0)

    def watermark(self, model_id: str) -> int:
        query = select(func.max(TemplateChange.seq)).where(TemplateChange.model_id == model_id)
        return int(self.s.scalar(query) or 0)

    def changes_since(self, model_id: str, seq: int, limit: int = 10_000) -> list[ChangeRow]:
        query = (
            select(TemplateChange.seq, TemplateChange.template_id, TemplateChange.op, *_ROW_COLUMNS)
            .outerjoin(Template, Template.id == TemplateChange.template_id)
            .outerjoin(Case, Case.id == Template.case_id)
            .where(TemplateChange.model_id == model_id, TemplateChange.seq > seq)
            .order_by(TemplateChange.seq)
            .limit(limit)
        )
        return [
            ChangeRow(r[0], r[1], r[2], _row(r[3:]) if r[2] == "add" and r[3] is not None else None)
            for r in self.s.execute(query)
        ]

    def block(self, model_id: str, after_id: int, size: int) -> list[TemplateRow]:
        """Up to ``size`` of a model's templates with ids above ``after_id``, in id order."""
        rows = self.s.execute(
            select(*_ROW_COLUMNS)
            .join(Case, Case.id == Template.case_id)
            .where(Template.model_id == model_id, Template.id > after_id)
            .order_by(Template.id)
            .limit(size)
        )
        return [_row(tuple(r)) for r in rows]

    @overload
    def vectors(self, model_id: str) -> Iterator[tuple[int, bytes, str, str]]: ...

    @overload
    def vectors(
        self, model_id: str, *, details: Literal[True]
    ) -> Iterator[tuple[int, bytes, str, str, str, float | None]]: ...

    def vectors(
        self, model_id: str, *, details: bool = False
    ) -> Iterator[tuple[int, bytes, str, str] | tuple[int, bytes, str, str, str, float | None]]:
        """(template id, vector, case id, kind) of a model's templates, in id order; with
        ``details`` also the photo id and the age the template stands for (evaluation)."""
        rows = self.s.execute(
            select(
                Template.id,
                Template.vector,
                Template.case_id,
                Template.kind,
                Template.photo_id,
                Template.age,
            )
            .where(Template.model_id == model_id)
            .order_by(Template.id)
        )
        for r in rows:
            yield (r[0], r[1], r[2], r[3], r[4], r[5]) if details else (r[0], r[1], r[2], r[3])


def _row(values: tuple[Any, ...]) -> TemplateRow:
    return TemplateRow(*values)


def remove_templates(s: Session, where: ColumnElement[bool] | Any) -> None:
    """Delete templates and log their removal in the same transaction."""
    rows = list(s.execute(select(Template.id, Template.model_id).where(where)))
    s.add_all(TemplateChange(model_id=m, template_id=i, op="remove") for i, m in rows)
    s.execute(delete(Template).where(where))
