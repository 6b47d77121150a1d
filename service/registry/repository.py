"""Registry operations. Each method is one transaction; callers never see a half-done change."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from service.errors import Conflict, NotFound
from service.registry.db import Database
from service.registry.models import Case, Photo, Sighting, Template, TemplateChange, utcnow

CASE_FIELDS = (
    "external_ref",
    "display_name",
    "sex",
    "birth_date",
    "age_at_disappearance",
    "missing_since",
    "region",
    "status",
)


@dataclass(frozen=True)
class NewTemplate:
    model_id: str
    vector: np.ndarray
    kind: str = "original"
    age: float | None = None
    generator: str | None = None


@dataclass(frozen=True)
class Change:
    seq: int
    template_id: int
    op: str
    vector: bytes | None  # None for removals, and for adds whose template is gone since


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- cases -------------------------------------------------------------------------

    def create_case(self, org_id: str, fields: dict[str, Any]) -> Case:
        case = Case(org_id=org_id, **{k: v for k, v in fields.items() if k in CASE_FIELDS})
        if case.status == "closed":
            case.closed_at = utcnow()
        try:
            with self.db.session() as s:
                s.add(case)
        except IntegrityError as err:
            raise Conflict(
                f"a case with external_ref {fields.get('external_ref')!r} exists"
            ) from err
        return case

    def get_case(self, case_id: str, scope: str | None = None) -> Case:
        """The case with its photos; ``scope`` (an org id) hides other orgs' cases."""
        with self.db.session() as s:
            return _case(s, case_id, scope, load_photos=True)

    def find_case_by_ref(self, external_ref: str, scope: str | None = None) -> Case | None:
        with self.db.session() as s:
            case = s.scalar(select(Case).where(Case.external_ref == external_ref))
        return case if case is not None and scope in (None, case.org_id) else None

    def list_cases(
        self, offset: int, limit: int, status: str | None, scope: str | None = None
    ) -> tuple[list[Case], int]:
        query = select(Case)
        if scope:
            query = query.where(Case.org_id == scope)
        if status:
            query = query.where(Case.status == status)
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.options(selectinload(Case.photos))
                .order_by(Case.created_at, Case.id)
                .offset(offset)
                .limit(limit)
            )
            return list(rows), total

    def update_case(self, case_id: str, fields: dict[str, Any], scope: str | None = None) -> Case:
        try:
            with self.db.session() as s:
                case = _case(s, case_id, scope, load_photos=True)
                if fields.get("status", case.status) != case.status:
                    case.closed_at = utcnow() if fields["status"] == "closed" else None
                for key, value in fields.items():
                    if key in CASE_FIELDS:
                        setattr(case, key, value)
        except IntegrityError as err:
            raise Conflict(
                f"a case with external_ref {fields.get('external_ref')!r} exists"
            ) from err
        return case

    def delete_case(self, case_id: str, scope: str | None = None) -> list[str]:
        """Delete the case with its photos, templates and candidates; returns the stored
        photo names (the caller removes the files once this has committed)."""
        with self.db.session() as s:
            _case(s, case_id, scope)
            names = list(s.scalars(select(Photo.stored_name).where(Photo.case_id == case_id)))
            _log_removals(s, s.scalars(select(Template).where(Template.case_id == case_id)))
            s.execute(delete(Template).where(Template.case_id == case_id))
            s.execute(delete(Photo).where(Photo.case_id == case_id))
            s.execute(delete(Case).where(Case.id == case_id))
        return names

    # -- photos and templates ------------------------------------------------------------

    def add_photo(
        self, case_id: str, photo: Photo, templates: Sequence[NewTemplate], scope: str | None = None
    ) -> Photo:
        try:
            with self.db.session() as s:
                _case(s, case_id, scope)
                photo.case_id = case_id
                s.add(photo)
                s.flush()
                _add_templates(s, photo, templates)
        except IntegrityError as err:
            raise Conflict("this photo is already enrolled for this case") from err
        return photo

    def replace_aged_templates(self, photo_id: str, templates: Sequence[NewTemplate]) -> None:
        """Swap a photo's aged templates for new ones, in one transaction."""
        with self.db.session() as s:
            photo = s.get(Photo, photo_id)
            if photo is None:
                raise NotFound(f"photo {photo_id} not found")
            aged = select(Template).where(Template.photo_id == photo_id, Template.kind == "aged")
            _log_removals(s, s.scalars(aged))
            s.execute(
                delete(Template).where(Template.photo_id == photo_id, Template.kind == "aged")
            )
            _add_templates(s, photo, templates)

    def photos_without_model(self, model_id: str) -> list[tuple[Photo, Case]]:
        """Photos with no original template of this model (enrolled under another one)."""
        with self.db.session() as s:
            have = select(Template.photo_id).where(
                Template.model_id == model_id, Template.kind == "original"
            )
            photos = s.scalars(
                select(Photo).where(Photo.id.not_in(have)).options(selectinload(Photo.case))
            )
            return [(p, p.case) for p in photos]

    def add_templates(self, photo_id: str, templates: Sequence[NewTemplate]) -> None:
        with self.db.session() as s:
            photo = s.get(Photo, photo_id)
            if photo is None:
                raise NotFound(f"photo {photo_id} not found")
            _add_templates(s, photo, templates)

    def photos_with_age(self) -> list[tuple[Photo, Case, list[tuple[float | None, str | None]]]]:
        """Photos with an age at photo, their case and their aged templates' (age,
        generator): what ageing refresh looks at."""
        with self.db.session() as s:
            photos = s.scalars(
                select(Photo)
                .where(Photo.age_at_photo.is_not(None))
                .options(selectinload(Photo.templates))
            )
            return [
                (p, p.case, [(t.age, t.generator) for t in p.templates if t.kind == "aged"])
                for p in photos
            ]

    def get_photo(self, case_id: str, photo_id: str, scope: str | None = None) -> Photo:
        with self.db.session() as s:
            return _photo(s, case_id, photo_id, scope)

    def delete_photo(self, case_id: str, photo_id: str, scope: str | None = None) -> str:
        with self.db.session() as s:
            photo = _photo(s, case_id, photo_id, scope)
            _log_removals(s, s.scalars(select(Template).where(Template.photo_id == photo_id)))
            s.execute(delete(Template).where(Template.photo_id == photo_id))
            s.delete(photo)
            return photo.stored_name

    def photo_names(self) -> set[str]:
        """Every stored file the registry references: case photos and sighting photos."""
        with self.db.session() as s:
            cases = set(s.scalars(select(Photo.stored_name)))
            return cases | set(s.scalars(select(Sighting.stored_name)))

    def template_kinds(self, template_ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        """template id -> (case id, photo id, kind)."""
        with self.db.session() as s:
            rows = s.execute(
                select(Template.id, Template.case_id, Template.photo_id, Template.kind).where(
                    Template.id.in_(list(template_ids))
                )
            )
            return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def cases_by_id(self, case_ids: Sequence[str]) -> dict[str, Case]:
        with self.db.session() as s:
            return {c.id: c for c in s.scalars(select(Case).where(Case.id.in_(list(case_ids))))}

    def template_ids_for_cases(self, model_id: str, case_ids: Sequence[str]) -> list[int]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Template.id).where(
                        Template.model_id == model_id, Template.case_id.in_(list(case_ids))
                    )
                )
            )

    def case_ages(
        self, sex: str | None, scope: str | None = None
    ) -> list[tuple[str, date | None, float | None, date | None]]:
        """(case id, birth date, age at disappearance, missing since) for the filters."""
        query = select(Case.id, Case.birth_date, Case.age_at_disappearance, Case.missing_since)
        if scope:
            query = query.where(Case.org_id == scope)
        if sex:
            query = query.where(Case.sex == sex)
        with self.db.session() as s:
            return [tuple(r) for r in s.execute(query)]  # type: ignore[misc]

    # -- what the vector index is derived from ---------------------------------------------

    def watermark(self, model_id: str) -> int:
        with self.db.session() as s:
            return int(
                s.scalar(
                    select(func.max(TemplateChange.seq)).where(TemplateChange.model_id == model_id)
                )
                or 0
            )

    def template_count(self, model_id: str) -> int:
        with self.db.session() as s:
            return int(
                s.scalar(select(func.count(Template.id)).where(Template.model_id == model_id)) or 0
            )

    def changes_since(self, model_id: str, seq: int, limit: int = 10_000) -> list[Change]:
        query = (
            select(
                TemplateChange.seq, TemplateChange.template_id, TemplateChange.op, Template.vector
            )
            .outerjoin(Template, Template.id == TemplateChange.template_id)
            .where(TemplateChange.model_id == model_id, TemplateChange.seq > seq)
            .order_by(TemplateChange.seq)
            .limit(limit)
        )
        with self.db.session() as s:
            return [
                Change(r[0], r[1], r[2], r[3] if r[2] == "add" else None) for r in s.execute(query)
            ]

    def iter_templates(
        self, model_id: str, block: int = 20_000
    ) -> Iterator[tuple[list[int], bytes]]:
        """All of a model's templates in id order, in blocks of (ids, concatenated vectors)."""
        last = -1
        while True:
            with self.db.session() as s:
                rows = s.execute(
                    select(Template.id, Template.vector)
                    .where(Template.model_id == model_id, Template.id > last)
                    .order_by(Template.id)
                    .limit(block)
                ).all()
            if not rows:
                return
            last = rows[-1][0]
            yield [r[0] for r in rows], b"".join(r[1] for r in rows)


def _case(s: Session, case_id: str, scope: str | None = None, load_photos: bool = False) -> Case:
    """The case, or NotFound, also when it belongs to an org other than ``scope``: another
    organisation's case is indistinguishable from one that does not exist."""
    case = s.get(Case, case_id)
    if case is None or (scope is not None and case.org_id != scope):
        raise NotFound(f"case {case_id} not found")
    if load_photos:
        _ = case.photos  # load while the session is open
    return case


def _photo(s: Session, case_id: str, photo_id: str, scope: str | None) -> Photo:
    _case(s, case_id, scope)
    photo = s.get(Photo, photo_id)
    if photo is None or photo.case_id != case_id:
        raise NotFound(f"photo {photo_id} not found in case {case_id}")
    return photo


def _add_templates(s: Session, photo: Photo, templates: Sequence[NewTemplate]) -> None:
    rows = [
        Template(
            case_id=photo.case_id,
            photo_id=photo.id,
            model_id=t.model_id,
            kind=t.kind,
            age=t.age,
            generator=t.generator,
            vector=_to_bytes(t.vector),
        )
        for t in templates
    ]
    s.add_all(rows)
    s.flush()
    s.add_all(TemplateChange(model_id=t.model_id, template_id=t.id, op="add") for t in rows)


def _log_removals(s: Session, templates: Iterator[Template] | Any) -> None:
    s.add_all(TemplateChange(model_id=t.model_id, template_id=t.id, op="remove") for t in templates)


def _to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def box_json(box: tuple[float, float, float, float]) -> str:
    return json.dumps([round(v, 1) for v in box])
