"""Sightings, the candidates made from them and reviewers' decisions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from service.errors import NotFound
from service.registry.models import Candidate, Case, Photo, Review, Sighting


class SightingRepository:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(self, sighting: Sighting, candidates: Sequence[Candidate]) -> None:
        self.s.add(sighting)
        self.s.flush()
        self.s.add_all(candidates)

    def get(self, sighting_id: str) -> Sighting | None:
        return self.s.get(Sighting, sighting_id)

    def sent_by(self, key_id: str, limit: int) -> list[Sighting]:
        return list(
            self.s.scalars(
                select(Sighting)
                .where(Sighting.submitted_by == key_id)
                .order_by(Sighting.created_at.desc())
                .limit(limit)
            )
        )

    def purgeable(self, cutoff: datetime) -> list[tuple[str, str]]:
        """(id, stored photo) of sightings not confirmed and received before ``cutoff``."""
        query = select(Sighting.id, Sighting.stored_name).where(
            Sighting.status != "confirmed", Sighting.created_at <= cutoff
        )
        return [(r[0], r[1]) for r in self.s.execute(query)]

    def delete(self, sighting_id: str) -> None:
        self.s.execute(delete(Sighting).where(Sighting.id == sighting_id))  # candidates cascade

    # -- candidates ------------------------------------------------------------------------

    def queue(
        self,
        scope: str | None,
        limit: int,
        *,
        min_score: float | None = None,
        case_ref: str | None = None,
        not_reviewed_by: str | None = None,
    ) -> list[tuple[Candidate, str | None]]:
        """Pending candidates (with their case's external ref and their reviews), the least
        likely by chance first (lowest estimated false-match rate; candidates without one
        after, by score), newest first among equals; optionally only those scoring at least
        ``min_score``, whose case ref contains ``case_ref``, or not yet reviewed by a key."""
        query = (
            select(Candidate, Case.external_ref)
            .join(Case, Case.id == Candidate.case_id)
            .where(Candidate.status == "pending")
            .options(selectinload(Candidate.reviews))
        )
        if scope is not None:
            query = query.where(Candidate.org_id == scope)
        if min_score is not None:
            query = query.where(Candidate.score >= min_score)
        if case_ref:
            query = query.where(Case.external_ref.icontains(case_ref, autoescape=True))
        if not_reviewed_by is not None:
            query = query.where(~Candidate.reviews.any(Review.reviewer == not_reviewed_by))
        query = query.order_by(
            Candidate.false_match_rate.asc().nulls_last(),
            Candidate.score.desc(),
            Candidate.created_at.desc(),
        ).limit(limit)
        return [(r[0], r[1]) for r in self.s.execute(query)]

    def pending_count(self, scope: str | None) -> int:
        query = select(func.count(Candidate.id)).where(Candidate.status == "pending")
        if scope is not None:
            query = query.where(Candidate.org_id == scope)
        return int(self.s.scalar(query) or 0)

    def candidate(self, candidate_id: str, scope: str | None, *, lock: bool = False) -> Candidate:
        """A candidate with its reviews and sighting, if routed to ``scope`` (None: any)."""
        query = (
            select(Candidate)
            .where(Candidate.id == candidate_id)
            .options(selectinload(Candidate.reviews), selectinload(Candidate.sighting))
        )
        candidate = self.s.scalar(query.with_for_update() if lock else query)
        if candidate is None or (scope is not None and candidate.org_id != scope):
            raise NotFound(f"candidate {candidate_id} not found")
        return candidate

    def case_photo(self, candidate: Candidate, photo_id: str) -> Photo:
        photo = self.s.get(Photo, photo_id)
        if photo is None or photo.case_id != candidate.case_id:
            raise NotFound(f"photo {photo_id} not found for candidate {candidate.id}")
        return photo

    def statuses_of_sighting(self, sighting_id: str) -> list[str]:
        query = select(Candidate.status).where(Candidate.sighting_id == sighting_id)
        return list(self.s.scalars(query))

    def add_review(self, candidate: Candidate, review: Review) -> None:
        candidate.reviews.append(review)
        self.s.flush()

    def confirmed_for_case(self, case_id: str, scope: str | None) -> list[Candidate]:
        """A case's confirmed candidates with their sightings and reviews, newest first."""
        query = (
            select(Candidate)
            .where(Candidate.case_id == case_id, Candidate.status == "confirmed")
            .options(selectinload(Candidate.reviews), selectinload(Candidate.sighting))
            .order_by(Candidate.created_at.desc())
        )
        if scope is not None:
            query = query.where(Candidate.org_id == scope)
        return list(self.s.scalars(query))
