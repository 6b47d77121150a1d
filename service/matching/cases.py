"""Cases and their photos: registry staff manage their own organisation's cases."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.errors import Conflict, InvalidInput
from service.matching.actors import Actor, Permission
from service.matching.ages import check_case_dates
from service.matching.views import CasePage, CaseView, ConfirmedSighting
from service.registry.db import Database, UnitOfWork
from service.registry.photostore import PhotoStore
from service.search.keeper import IndexKeeper

Sex = Literal["female", "male", "unknown"]
CaseStatus = Literal["missing", "found", "closed"]
NOT_NULL = ("display_name", "sex", "status")
FILTERED_ON = ("sex", "birth_date", "age_at_disappearance", "missing_since")


class CaseFields(BaseModel):
    """A case's fields as clients send them (the API's bodies, the CLI's CSV rows)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    external_ref: str | None = Field(None, min_length=1, max_length=128)
    sex: Sex | None = None
    birth_date: date | None = None
    age_at_disappearance: float | None = Field(None, ge=0, le=25)
    missing_since: date | None = None
    region: str | None = Field(None, min_length=1, max_length=200)
    status: CaseStatus | None = None


class NewCase(CaseFields):
    display_name: str = Field(min_length=1, max_length=200)
    sex: Sex = "unknown"
    status: CaseStatus = "missing"


class CaseChanges(CaseFields):
    """Only the fields sent are changed; ``null`` clears an optional field."""

    display_name: str | None = Field(None, min_length=1, max_length=200)


CASE_FIELDS_OF_CSV = tuple(NewCase.model_fields)


class CaseService:
    def __init__(self, db: Database, photos: PhotoStore, index: IndexKeeper) -> None:
        self.db = db
        self.photos = photos
        self.index = index

    def create(self, actor: Actor, new: NewCase) -> CaseView:
        actor.require(Permission.CASES)
        fields = new.model_dump()
        check_case_dates(new.birth_date, new.missing_since)
        with self.db.unit() as tx:
            org_id = actor.org_id or ""
            _check_ref_free(tx, org_id, new.external_ref)
            case = tx.cases.add(org_id, fields)
            tx.audit.record(actor, "case.create", target=case.id)
            return CaseView.of(case)

    def get(self, actor: Actor, case_id: str) -> CaseView:
        actor.require(Permission.CASES)
        with self.db.unit() as tx:
            return CaseView.of(tx.cases.get(case_id, actor.scope))

    def page(
        self,
        actor: Actor,
        offset: int = 0,
        limit: int = 50,
        status: str | None = None,
        text: str | None = None,
    ) -> CasePage:
        """A page of the actor's cases, oldest first; ``text`` searches names and refs."""
        actor.require(Permission.CASES)
        with self.db.unit() as tx:
            rows, total = tx.cases.page(offset, limit, status, actor.scope, text)
            return CasePage([CaseView.of(c) for c in rows], total, offset, limit)

    def confirmed_sightings(self, actor: Actor, case_id: str) -> list[ConfirmedSighting]:
        """The sightings reviewers confirmed for one of the actor's cases, newest first."""
        actor.require(Permission.CASES)
        with self.db.unit() as tx:
            tx.cases.get(case_id, actor.scope)
            candidates = tx.sightings.confirmed_for_case(case_id, actor.scope)
            confirms = {c.id: [r for r in c.reviews if r.decision == "confirm"] for c in candidates}
            names = tx.keys.names([r.reviewer for rs in confirms.values() for r in rs])
            return [
                ConfirmedSighting(
                    sighting_id=c.sighting_id,
                    candidate_id=c.id,
                    place=c.sighting.place,
                    seen_at=c.sighting.seen_at,
                    estimated_age=c.sighting.estimated_age,
                    score=c.score,
                    confirmed_by=[names.get(r.reviewer, r.reviewer) for r in confirms[c.id]],
                    confirmed_at=max((r.created_at for r in confirms[c.id]), default=c.created_at),
                )
                for c in candidates
            ]

    def update(self, actor: Actor, case_id: str, changes: CaseChanges) -> CaseView:
        actor.require(Permission.CASES)
        fields = changes.model_dump(exclude_unset=True)
        if nulls := [name for name in NOT_NULL if name in fields and fields[name] is None]:
            raise InvalidInput(f"{', '.join(nulls)} cannot be null")
        with self.db.unit() as tx:
            case = tx.cases.get(case_id, actor.scope)
            merged = {k: fields.get(k, getattr(case, k)) for k in ("birth_date", "missing_since")}
            check_case_dates(merged["birth_date"], merged["missing_since"])
            _check_ref_free(tx, case.org_id, fields.get("external_ref"), case_id)
            tx.cases.update(case, fields)
            if any(k in fields for k in FILTERED_ON):
                tx.templates.case_changed(case_id)  # the index filters on these
            tx.audit.record(actor, "case.update", target=case_id, detail={"fields": sorted(fields)})
            view = CaseView.of(tx.cases.get(case_id, with_photos=True))
        self.index.catch_up()
        return view

    def delete(self, actor: Actor, case_id: str) -> None:
        """The case with its photos, files, templates, candidates and index entries."""
        actor.require(Permission.CASES)
        self.remove(actor, case_id, "case.delete")

    def remove(self, actor: Actor, case_id: str, action: str) -> None:
        """Delete a case the actor reaches, audited as ``action`` (deletion or purge)."""
        with self.db.unit() as tx:
            tx.cases.get(case_id, actor.scope)
            names = tx.cases.delete(case_id)
            tx.audit.record(actor, action, target=case_id)
        for name in names:  # after the commit: a crash in between leaves orphans to sweep
            self.photos.delete(name)
        self.index.catch_up()

    def photo_image(self, actor: Actor, case_id: str, photo_id: str) -> bytes:
        """A stored case photo (decrypted), for people who may see it; the view is audited."""
        actor.require(Permission.CASES)
        with self.db.unit() as tx:
            photo = tx.cases.photo(case_id, photo_id, actor.scope)
            tx.audit.record(actor, "photo.view", target=case_id, results=[photo_id])
        return self.photos.read(photo.stored_name)

    def delete_photo(self, actor: Actor, case_id: str, photo_id: str) -> None:
        actor.require(Permission.CASES)
        with self.db.unit() as tx:
            name = tx.cases.delete_photo(tx.cases.photo(case_id, photo_id, actor.scope))
            tx.audit.record(actor, "photo.delete", target=case_id, results=[photo_id])
        self.photos.delete(name)
        self.index.catch_up()


def _check_ref_free(
    tx: UnitOfWork, org_id: str, external_ref: str | None, case_id: str | None = None
) -> None:
    if external_ref and tx.cases.ref_taken(org_id, external_ref, case_id):
        raise Conflict(f"your organisation has a case with external_ref {external_ref!r}")
