"""The review page: the queue of candidates, then one candidate at a time (the sighting's face
beside the case's photos, original and aged) with the reviewer's decision. Each page and image
is the use case the API's review routes call, audited there."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator

from service.ageing.growth import SEXES
from service.api.deps import EnrollmentDep, ReviewDep, StateDep
from service.api.routes.ageing import encode
from service.api.schemas import jpeg
from service.errors import NotFound
from service.matching.actors import Actor, Permission
from service.matching.ages import aged_preview_age
from service.matching.review import REVIEWERS_NEEDED, ReviewService
from service.matching.views import CaseView, PhotoView, QueueItem, SignedIn
from service.web.session import Poster, page_for, render, see_other

router = APIRouter(include_in_schema=False)
Reviewer = Annotated[SignedIn, page_for(Permission.REVIEW)]
Choice = Literal["confirm", "reject", "unsure"]
CandidateId = Annotated[str, Query(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]


class QueueFilter(BaseModel):
    """The queue's filters, from the query string of the queue and the candidate pages."""

    min_score: float | None = Field(None, ge=-1, le=1)
    case_ref: str | None = Field(None, max_length=128)
    mine: bool = False  # only the candidates still awaiting this reviewer's decision

    @field_validator("min_score", "case_ref", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        """An emptied field of the filter form means no filter."""
        return None if isinstance(value, str) and not value.strip() else value

    def items(self, review: ReviewService, actor: Actor) -> list[QueueItem]:
        ref = self.case_ref.strip() if self.case_ref else None
        return review.queue(actor, min_score=self.min_score, case_ref=ref, awaiting_me=self.mine)

    def query(self, **extra: str) -> str:
        """The filters (and ``extra``) as a query string to carry from page to page."""
        mine = "true" if self.mine else None
        values = {"min_score": self.min_score, "case_ref": self.case_ref, "mine": mine, **extra}
        return urlencode({k: v for k, v in values.items() if v is not None})


Filters = Annotated[QueueFilter, Query()]


@router.get("/review")
def queue_page(
    request: Request,
    visitor: Reviewer,
    review: ReviewDep,
    state: StateDep,
    filters: Filters,
    done: bool = False,
    prev: CandidateId | None = None,
) -> Response:
    return render(
        request,
        "review_queue.html",
        visitor,
        items=filters.items(review, visitor.actor),
        filters=filters,
        query=filters.query(),
        filtered=filters.query() != "",
        needed=REVIEWERS_NEEDED,
        stands_out=state.container.settings.stands_out_rate,
        done=done,
        prev=prev,
    )


@router.get("/review/{candidate_id}")
def candidate_page(
    request: Request,
    candidate_id: str,
    visitor: Reviewer,
    review: ReviewDep,
    state: StateDep,
    filters: Filters,
    recorded: Choice | None = None,
    prev: CandidateId | None = None,
) -> Response:
    detail = review.detail(visitor.actor, candidate_id)
    mine = next((r for r in detail.reviews if r.reviewer == visitor.key_id), None)
    return render(
        request,
        "review_candidate.html",
        visitor,
        d=detail,
        stands_out=state.container.settings.stands_out_rate,
        mine=mine,
        aged={p.id: ages[1] for p in detail.case.photos if (ages := aged_ages(detail.case, p))},
        next_id=next_candidate(filters.items(review, visitor.actor), candidate_id),
        query=filters.query(),
        recorded=recorded,
        prev=prev,
    )


@router.post("/review/{candidate_id}")
def decide(
    candidate_id: str,
    visitor: Poster,
    review: ReviewDep,
    filters: Filters,
    decision: Annotated[Choice, Form()],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Records the decision, then on to the next candidate awaiting this reviewer."""
    review.decide(visitor.actor, candidate_id, decision, note.strip() or None)
    next_id = next_candidate(filters.items(review, visitor.actor), candidate_id)
    if next_id is None:
        return see_other(f"/review?{filters.query(done='true', prev=candidate_id)}")
    query = filters.query(recorded=decision, prev=candidate_id)
    return see_other(f"/review/{next_id}?{query}")


@router.get("/review/{candidate_id}/probe.jpg")
async def probe_image(
    candidate_id: str, visitor: Reviewer, review: ReviewDep, state: StateDep
) -> Response:
    return jpeg(await state.run(review.probe_photo, visitor.actor, candidate_id))


@router.get("/review/{candidate_id}/photos/{photo_id}.jpg")
async def case_image(
    candidate_id: str, photo_id: str, visitor: Reviewer, review: ReviewDep, state: StateDep
) -> Response:
    return jpeg(await state.run(review.case_photo, visitor.actor, candidate_id, photo_id))


@router.get("/review/{candidate_id}/photos/{photo_id}/aged.jpg")
async def aged_image(
    candidate_id: str,
    photo_id: str,
    visitor: Reviewer,
    review: ReviewDep,
    enrollment: EnrollmentDep,
    state: StateDep,
) -> Response:
    """The case photo aged to the case's expected age today, as the page shows it."""
    detail = await state.run(review.detail, visitor.actor, candidate_id)
    photo = next((p for p in detail.case.photos if p.id == photo_id), None)
    ages = None if photo is None else aged_ages(detail.case, photo)
    if ages is None:
        raise NotFound(f"photo {photo_id} of candidate {candidate_id} has no aged preview")
    data = await state.run(review.case_photo, visitor.actor, candidate_id, photo_id)
    sex = detail.case.sex if detail.case.sex in SEXES else None
    aged = await state.run(
        enrollment.age_upload, visitor.actor, data, ages[0], [ages[1]], sex, None
    )
    return jpeg(await state.run(encode, aged.aged[0].image, "jpeg"))


def aged_ages(case: CaseView, photo: PhotoView) -> tuple[float, float] | None:
    """(age at the photo, age to show it at), when an aged preview applies."""
    now = aged_preview_age(photo.age_at_photo, case.expected_age_today)
    return None if now is None or photo.age_at_photo is None else (photo.age_at_photo, now)


def next_candidate(queue: list[QueueItem], current: str) -> str | None:
    """The first candidate after ``current`` in queue order (wrapping round) that still
    awaits this reviewer's decision; the current one never counts."""
    ids = [item.candidate_id for item in queue]
    start = ids.index(current) + 1 if current in ids else 0
    for item in queue[start:] + queue[:start]:
        if item.candidate_id != current and item.my_decision is None:
            return item.candidate_id
    return None
