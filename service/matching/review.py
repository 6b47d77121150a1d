"""Review: reviewers work through the candidates routed to their organisation. Two
different reviewers must confirm a candidate (or reject it); a confirmation queues a
signed webhook to the owning organisation in the same transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from service.errors import Conflict, InvalidInput
from service.matching.actors import Actor, Permission
from service.matching.views import (
    CandidateDetail,
    CaseView,
    Decision,
    ProbeView,
    QueueItem,
    ReviewView,
)
from service.registry.db import Database, UnitOfWork
from service.registry.models import Candidate, Review
from service.registry.photostore import PhotoStore

DECISIONS = ("confirm", "reject", "unsure")
REVIEWERS_NEEDED = 2
QUEUE_SHOWN = 100


class ReviewService:
    def __init__(self, db: Database, photos: PhotoStore) -> None:
        self.db = db
        self.photos = photos

    def queue(
        self,
        actor: Actor,
        limit: int = QUEUE_SHOWN,
        *,
        min_score: float | None = None,
        case_ref: str | None = None,
        awaiting_me: bool = False,
    ) -> list[QueueItem]:
        """Pending candidates routed to the reviewer's organisation, the least likely by chance
        first (see ``SightingRepository.queue``); optionally only those scoring at least
        ``min_score``, whose case ref contains ``case_ref``, or still awaiting this reviewer's
        decision."""
        actor.require(Permission.REVIEW)
        with self.db.unit() as tx:
            rows = tx.sightings.queue(
                actor.scope,
                limit,
                min_score=min_score,
                case_ref=case_ref,
                not_reviewed_by=actor.key_id if awaiting_me else None,
            )
            return [
                QueueItem(
                    candidate_id=c.id,
                    sighting_id=c.sighting_id,
                    case_id=c.case_id,
                    external_ref=ref,
                    score=c.score,
                    false_match_rate=c.false_match_rate,
                    rank=c.rank,
                    status=c.status,
                    created_at=c.created_at,
                    confirmations=_confirmations(c),
                    my_decision=next(
                        (r.decision for r in c.reviews if r.reviewer == actor.key_id), None
                    ),
                )
                for c, ref in rows
            ]

    def detail(self, actor: Actor, candidate_id: str) -> CandidateDetail:
        actor.require(Permission.REVIEW)
        with self.db.unit() as tx:
            candidate = tx.sightings.candidate(candidate_id, actor.scope)
            case = CaseView.of(tx.cases.get(candidate.case_id, with_photos=True))
            reviews = _reviews(tx, candidate)
            tx.audit.record(actor, "candidate.view", target=candidate_id, results=[case.id])
            sighting = candidate.sighting
            probe = ProbeView(
                url=f"/v1/review/{candidate.id}/probe",
                face_box=json.loads(candidate.face_box),
                quality=json.loads(candidate.face_quality),
                place=sighting.place,
                seen_at=sighting.seen_at,
                estimated_age=sighting.estimated_age,
            )
            return CandidateDetail(
                candidate_id=candidate.id,
                status=candidate.status,
                score=candidate.score,
                false_match_rate=candidate.false_match_rate,
                rank=candidate.rank,
                age_gap=_age_gap(case.expected_age_today, sighting.estimated_age),
                probe=probe,
                case=case,
                matched_photo_id=candidate.photo_id,
                reviews=reviews,
                reviewers_needed=REVIEWERS_NEEDED,
                confirmations=_confirmations(candidate),
            )

    def probe_photo(self, actor: Actor, candidate_id: str) -> bytes:
        actor.require(Permission.REVIEW)
        with self.db.unit() as tx:
            sighting = tx.sightings.candidate(candidate_id, actor.scope).sighting
            tx.audit.record(
                actor, "sighting.photo.view", target=sighting.id, results=[candidate_id]
            )
        return self.photos.read(sighting.stored_name)

    def case_photo(self, actor: Actor, candidate_id: str, photo_id: str) -> bytes:
        """A photo of the candidate's case, for the reviewers it is routed to."""
        actor.require(Permission.REVIEW)
        with self.db.unit() as tx:
            candidate = tx.sightings.candidate(candidate_id, actor.scope)
            photo = tx.sightings.case_photo(candidate, photo_id)
            tx.audit.record(
                actor,
                "photo.view",
                target=candidate.case_id,
                results=[photo_id],
                detail={"candidate": candidate_id},
            )
        return self.photos.read(photo.stored_name)

    def decide(
        self, actor: Actor, candidate_id: str, decision: str, note: str | None = None
    ) -> Decision:
        """Record one reviewer's decision. Two different reviewers confirming makes the
        candidate confirmed (and tells the owning organisation); two rejecting rejects it."""
        actor.require(Permission.REVIEW)
        if decision not in DECISIONS:
            raise InvalidInput(f"decision must be one of {', '.join(DECISIONS)}")
        with self.db.unit() as tx:
            candidate = tx.sightings.candidate(candidate_id, actor.scope, lock=True)
            if candidate.status != "pending":
                raise Conflict(f"candidate {candidate_id} is already {candidate.status}")
            mine = next((r for r in candidate.reviews if r.reviewer == actor.key_id), None)
            if mine is None:
                tx.sightings.add_review(
                    candidate, Review(reviewer=actor.key_id, decision=decision, note=note)
                )
            else:
                mine.decision, mine.note, mine.created_at = decision, note, datetime.now(UTC)
            candidate.status = _status(candidate.reviews)
            candidate.sighting.status = _sighting_status(
                tx.sightings.statuses_of_sighting(candidate.sighting_id)
            )
            if candidate.status == "confirmed":
                tx.outbox.enqueue(candidate.org_id, "candidate.confirmed", _confirmation(candidate))
            tx.audit.record(
                actor,
                "review.decide",
                target=candidate_id,
                results=[candidate.case_id],
                detail={"decision": decision, "status": candidate.status},
            )
            return Decision(candidate.id, candidate.status, _confirmations(candidate))


def _reviews(tx: UnitOfWork, candidate: Candidate) -> list[ReviewView]:
    names = tx.keys.names([r.reviewer for r in candidate.reviews])
    return [
        ReviewView(r.reviewer, names.get(r.reviewer), r.decision, r.note, r.created_at)
        for r in candidate.reviews
    ]


def _confirmations(candidate: Candidate) -> int:
    return len({r.reviewer for r in candidate.reviews if r.decision == "confirm"})


def _age_gap(expected_now: float | None, estimated: float | None) -> float | None:
    return None if expected_now is None or estimated is None else round(expected_now - estimated, 1)


def _status(reviews: list[Review]) -> str:
    for decision, status in (("confirm", "confirmed"), ("reject", "rejected")):
        if len({r.reviewer for r in reviews if r.decision == decision}) >= REVIEWERS_NEEDED:
            return status
    return "pending"


def _sighting_status(candidate_statuses: list[str]) -> str:
    if "confirmed" in candidate_statuses:
        return "confirmed"
    if candidate_statuses and all(st == "rejected" for st in candidate_statuses):
        return "closed"
    return "in_review"


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
