"""Sightings and their review: a volunteer's photo becomes candidate lists routed to the
organisations that own the candidate cases; two different reviewers must confirm one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from service.audit import Actor
from service.errors import Conflict, NoFaceFound, NotFound
from service.matching import Homeward, case_expected_age
from service.registry.models import Candidate, Case, Photo, Review, Sighting, new_id
from service.registry.repository import box_json
from service.webhooks import Webhooks

DECISIONS = ("confirm", "reject", "unsure")
REVIEWERS_NEEDED = 2


@dataclass(frozen=True)
class SightingReport:
    place: str | None
    seen_at: datetime | None
    estimated_age: float | None
    note: str | None


@dataclass(frozen=True)
class CandidateDetail:
    candidate: Candidate
    sighting: Sighting
    case: Case
    photos: list[Photo]  # the case's photos: originals and the sources of aged templates
    age_gap: float | None
    reviews: list[Review]


class Sightings:
    def __init__(self, homeward: Homeward, webhooks: Webhooks) -> None:
        self.homeward = homeward
        self.db = homeward.registry.db
        self.webhooks = webhooks

    # -- volunteers ----------------------------------------------------------------------

    def submit(self, actor: Actor, data: bytes, report: SightingReport) -> Sighting:
        """Store the photo (re-encoded, sealed), match every face against every
        organisation's cases, and route each candidate to the case's organisation."""
        image = self.homeward.decode(data)
        try:
            result = self.homeward.search(image, top_k=self.homeward.settings.default_candidates)
        except NoFaceFound:
            result = None
        sighting = Sighting(
            id=new_id(),
            submitted_by=actor.key_id,
            org_id=actor.org_id or "",
            upload_sha256=image.upload_sha256,
            **asdict(report),
        )
        sighting.stored_name = f"sighting-{sighting.id}.jpg"
        candidates = (
            []
            if result is None
            else [
                Candidate(
                    id=new_id(),
                    sighting_id=sighting.id,
                    face_index=n,
                    face_box=box_json(face.analysed.face.box),
                    face_quality=json.dumps(asdict(face.analysed.quality)),
                    case_id=c.case_id,
                    org_id=c.org_id,
                    photo_id=c.photo_id,
                    template_kind=c.template_kind,
                    rank=c.rank,
                    score=c.score,
                )
                for n, face in enumerate(result.faces)
                for c in face.candidates
            ]
        )
        sighting.status = "received" if candidates else "closed"
        self.homeward.photos.put(sighting.stored_name, image.clean_jpeg)
        try:
            with self.db.session() as s:
                s.add(sighting)
                s.flush()
                s.add_all(candidates)
        except BaseException:
            self.homeward.photos.delete(sighting.stored_name)
            raise
        self.homeward.audit.record(
            actor,
            "sighting.create",
            target=sighting.id,
            input_sha256=image.upload_sha256,
            results=[c.case_id for c in candidates],
            detail={"faces": 0 if result is None else len(result.faces)},
        )
        return sighting

    def get(self, actor: Actor, sighting_id: str) -> Sighting:
        """A sighting, for the key that sent it (or an admin): others get 404."""
        with self.db.session() as s:
            sighting = s.get(Sighting, sighting_id)
        if sighting is None or not (actor.is_admin or sighting.submitted_by == actor.key_id):
            raise NotFound(f"sighting {sighting_id} not found")
        return sighting

    def own(self, actor: Actor, limit: int = 100) -> list[Sighting]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Sighting)
                    .where(Sighting.submitted_by == actor.key_id)
                    .order_by(Sighting.created_at.desc())
                    .limit(limit)
                )
            )

    # -- reviewers -----------------------------------------------------------------------

    def queue(self, actor: Actor, limit: int = 100) -> list[Candidate]:
        """Pending candidates routed to the reviewer's organisation, best scores first."""
        query = select(Candidate).where(Candidate.status == "pending")
        if not actor.is_admin:
            query = query.where(Candidate.org_id == actor.org_id)
        with self.db.session() as s:
            return list(s.scalars(query.order_by(Candidate.score.desc()).limit(limit)))

    def detail(self, actor: Actor, candidate_id: str) -> CandidateDetail:
        with self.db.session() as s:
            candidate = self._candidate(s, actor, candidate_id)
            case = s.get(Case, candidate.case_id)
            assert case is not None
            photos = list(case.photos)
            for photo in photos:
                _ = photo.templates  # loaded while the session is open
            sighting = candidate.sighting
            reviews = list(candidate.reviews)
        expected = case_expected_age(case)
        gap = (
            None
            if expected is None or sighting.estimated_age is None
            else round(expected - sighting.estimated_age, 1)
        )
        self.homeward.audit.record(actor, "candidate.view", target=candidate_id, results=[case.id])
        return CandidateDetail(candidate, sighting, case, photos, gap, reviews)

    def probe_photo(self, actor: Actor, candidate_id: str) -> bytes:
        with self.db.session() as s:
            sighting = self._candidate(s, actor, candidate_id).sighting
        self.homeward.audit.record(
            actor, "sighting.photo.view", target=sighting.id, results=[candidate_id]
        )
        return self.homeward.photos.read(sighting.stored_name)

    def case_photo(self, actor: Actor, candidate_id: str, photo_id: str) -> bytes:
        """A photo of the candidate's case, for the reviewers it is routed to."""
        with self.db.session() as s:
            candidate = self._candidate(s, actor, candidate_id)
            photo = s.get(Photo, photo_id)
            if photo is None or photo.case_id != candidate.case_id:
                raise NotFound(f"photo {photo_id} not found for candidate {candidate_id}")
        self.homeward.audit.record(
            actor,
            "photo.view",
            target=candidate.case_id,
            results=[photo_id],
            detail={"candidate": candidate_id},
        )
        return self.homeward.photos.read(photo.stored_name)

    def decide(self, actor: Actor, candidate_id: str, decision: str, note: str | None) -> Candidate:
        """Record one reviewer's decision. Two different reviewers confirming makes the
        candidate confirmed (and tells the owning organisation); two rejecting rejects it."""
        with self.db.session() as s:
            candidate = self._candidate(s, actor, candidate_id)
            if candidate.status != "pending":
                raise Conflict(f"candidate {candidate_id} is already {candidate.status}")
            mine = next((r for r in candidate.reviews if r.reviewer == actor.key_id), None)
            if mine is None:
                candidate.reviews.append(
                    Review(reviewer=actor.key_id, decision=decision, note=note)
                )
            else:
                mine.decision, mine.note, mine.created_at = decision, note, datetime.now(UTC)
            candidate.status = _status(candidate.reviews)
            _update_sighting(s, candidate.sighting)
            confirmed = candidate.status == "confirmed"
            if confirmed:
                self.webhooks.enqueue(
                    s, candidate.org_id, "candidate.confirmed", _confirmation(candidate)
                )
        self.homeward.audit.record(
            actor,
            "review.decide",
            target=candidate_id,
            results=[candidate.case_id],
            detail={"decision": decision, "status": candidate.status},
        )
        return candidate

    def _candidate(self, s: Session, actor: Actor, candidate_id: str) -> Candidate:
        candidate = s.scalar(
            select(Candidate)
            .where(Candidate.id == candidate_id)
            .options(selectinload(Candidate.reviews), selectinload(Candidate.sighting))
        )
        if candidate is None or not (actor.is_admin or candidate.org_id == actor.org_id):
            raise NotFound(f"candidate {candidate_id} not found")
        return candidate


def _status(reviews: list[Review]) -> str:
    for decision, status in (("confirm", "confirmed"), ("reject", "rejected")):
        if len({r.reviewer for r in reviews if r.decision == decision}) >= REVIEWERS_NEEDED:
            return status
    return "pending"


def _update_sighting(s: Session, sighting: Sighting) -> None:
    statuses = [
        c.status for c in s.scalars(select(Candidate).where(Candidate.sighting_id == sighting.id))
    ]
    if "confirmed" in statuses:
        sighting.status = "confirmed"
    elif statuses and all(st == "rejected" for st in statuses):
        sighting.status = "closed"
    else:
        sighting.status = "in_review"


def _confirmation(candidate: Candidate) -> dict[str, object]:
    sighting = candidate.sighting
    return {
        "candidate_id": candidate.id,
        "case_id": candidate.case_id,
        "score": candidate.score,
        "sighting_id": sighting.id,
        "place": sighting.place,
        "seen_at": sighting.seen_at.isoformat() if sighting.seen_at else None,
        "confirmed_by": sorted(r.reviewer for r in candidate.reviews if r.decision == "confirm"),
    }
