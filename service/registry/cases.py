"""Cases and their photos."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session, selectinload

from service.errors import NotFound
from service.registry.models import Case, Photo, Sighting, Template, utcnow
from service.registry.templates import remove_templates

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


class CaseRepository:
    """``scope`` is an organisation id: another organisation's case is indistinguishable
    from one that does not exist (None: every organisation's)."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, org_id: str, fields: dict[str, Any]) -> Case:
        case = Case(org_id=org_id, **{k: v for k, v in fields.items() if k in CASE_FIELDS})
        if case.status == "closed":
            case.closed_at = utcnow()
        self.s.add(case)
        self.s.flush()
        case.photos = []
        return case

    def get(self, case_id: str, scope: str | None = None, *, with_photos: bool = False) -> Case:
        case = self.s.get(Case, case_id)
        if case is None or (scope is not None and case.org_id != scope):
            raise NotFound(f"case {case_id} not found")
        if with_photos:
            for photo in case.photos:  # loaded while the session is open
                _ = photo.templates
        return case

    def by_ref(self, org_id: str, external_ref: str) -> Case | None:
        return self.s.scalar(
            select(Case).where(Case.org_id == org_id, Case.external_ref == external_ref)
        )

    def ref_taken(self, org_id: str, external_ref: str, except_case: str | None = None) -> bool:
        """Whether the organisation has a case with this external ref (refs are unique per
        organisation: another's are never looked at, so none can be probed)."""
        query = select(Case.id).where(Case.org_id == org_id, Case.external_ref == external_ref)
        if except_case:
            query = query.where(Case.id != except_case)
        return self.s.scalar(query.limit(1)) is not None

    def page(
        self, offset: int, limit: int, status: str | None, scope: str | None, text: str | None
    ) -> tuple[list[Case], int]:
        query = select(Case)
        if scope:
            query = query.where(Case.org_id == scope)
        if status:
            query = query.where(Case.status == status)
        if text:  # case-insensitive; a "%" or "_" in the text is itself, not a wildcard
            query = query.where(
                or_(
                    Case.display_name.icontains(text, autoescape=True),
                    Case.external_ref.icontains(text, autoescape=True),
                )
            )
        total = self.s.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self.s.scalars(
            query.options(selectinload(Case.photos).selectinload(Photo.templates))
            .order_by(Case.created_at, Case.id)
            .offset(offset)
            .limit(limit)
        )
        return list(rows), total

    def update(self, case: Case, fields: dict[str, Any]) -> None:
        if fields.get("status", case.status) != case.status:
            case.closed_at = utcnow() if fields["status"] == "closed" else None
        for key, value in fields.items():
            if key in CASE_FIELDS:
                setattr(case, key, value)
        self.s.flush()

    def delete(self, case_id: str) -> list[str]:
        """Delete the case with its photos, templates and candidates; returns the stored
        photo names (the caller removes the files once this has committed)."""
        names = list(self.s.scalars(select(Photo.stored_name).where(Photo.case_id == case_id)))
        remove_templates(self.s, Template.case_id == case_id)
        self.s.execute(delete(Photo).where(Photo.case_id == case_id))
        self.s.execute(delete(Case).where(Case.id == case_id))
        return names

    def closed_before(self, cutoff: Any) -> list[str]:
        return list(
            self.s.scalars(select(Case.id).where(Case.status == "closed", Case.closed_at <= cutoff))
        )

    def by_ids(self, case_ids: Sequence[str]) -> dict[str, Case]:
        rows = self.s.scalars(select(Case).where(Case.id.in_(list(case_ids))))
        return {c.id: c for c in rows}

    def for_export(self) -> list[Case]:
        return list(
            self.s.scalars(
                select(Case)
                .options(selectinload(Case.photos).selectinload(Photo.templates))
                .order_by(Case.created_at)
            )
        )

    # -- photos ----------------------------------------------------------------------------

    def add_photo(self, case: Case, photo: Photo) -> Photo:
        photo.case_id = case.id
        self.s.add(photo)
        self.s.flush()
        return photo

    def has_photo(self, case_id: str, upload_sha256: str) -> bool:
        query = select(Photo.id).where(
            Photo.case_id == case_id, Photo.upload_sha256 == upload_sha256
        )
        return self.s.scalar(query) is not None

    def photo(self, case_id: str, photo_id: str, scope: str | None = None) -> Photo:
        self.get(case_id, scope)
        photo = self.s.get(Photo, photo_id)
        if photo is None or photo.case_id != case_id:
            raise NotFound(f"photo {photo_id} not found in case {case_id}")
        return photo

    def photo_by_id(self, photo_id: str) -> Photo | None:
        return self.s.get(Photo, photo_id)

    def delete_photo(self, photo: Photo) -> str:
        remove_templates(self.s, Template.photo_id == photo.id)
        self.s.delete(photo)
        return photo.stored_name

    def photos_with_age(self) -> list[tuple[Photo, Case, list[tuple[float | None, str | None]]]]:
        """Photos with an age at photo, their case and their aged templates' (age,
        generator): what ageing refresh looks at."""
        photos = self.s.scalars(
            select(Photo)
            .where(Photo.age_at_photo.is_not(None))
            .options(selectinload(Photo.templates), selectinload(Photo.case))
        )
        return [
            (p, p.case, [(t.age, t.generator) for t in p.templates if t.kind == "aged"])
            for p in photos
        ]

    def photos_without_model(self, model_id: str) -> list[tuple[Photo, Case]]:
        """Photos with no original template of this model (enrolled under another one)."""
        have = select(Template.photo_id).where(
            Template.model_id == model_id, Template.kind == "original"
        )
        photos = self.s.scalars(
            select(Photo).where(Photo.id.not_in(have)).options(selectinload(Photo.case))
        )
        return [(p, p.case) for p in photos]

    def count_photos_without_model(self, model_id: str) -> int:
        have = select(Template.photo_id).where(
            Template.model_id == model_id, Template.kind == "original"
        )
        return int(self.s.scalar(select(func.count(Photo.id)).where(Photo.id.not_in(have))) or 0)

    def stored_names(self) -> set[str]:
        """Every stored file the registry references: case photos and sighting photos."""
        cases = set(self.s.scalars(select(Photo.stored_name)))
        return cases | set(self.s.scalars(select(Sighting.stored_name)))
