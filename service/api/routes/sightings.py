"""Sightings (volunteers) and their review (reviewers of the organisations they reach)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile

from service.api.deps import ReviewDep, SightingsDep, StateDep, read_upload, require
from service.api.forms import MAX_BOX_TEXT, parse_box
from service.api.schemas import (
    CandidateDetailOut,
    DecisionIn,
    DecisionOut,
    QueueItemOut,
    SightingOut,
    jpeg,
)
from service.faces.pipeline import FaceChoice
from service.matching.actors import Actor, Permission
from service.matching.sightings import SightingReport

router = APIRouter(tags=["sightings and review"])
Volunteer = Annotated[Actor, Depends(require(Permission.SIGHTINGS))]
Reviewer = Annotated[Actor, Depends(require(Permission.REVIEW))]
IMAGE: dict[int | str, dict[str, Any]] = {200: {"content": {"image/jpeg": {}}}}


@router.post("/v1/sightings", status_code=201, response_model=SightingOut)
async def submit_sighting(
    sightings: SightingsDep,
    state: StateDep,
    actor: Volunteer,
    file: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    place: Annotated[str | None, Form(max_length=200)] = None,
    seen_at: Annotated[datetime | None, Form(description="when the child was seen")] = None,
    estimated_age: Annotated[float | None, Form(ge=0, le=25)] = None,
    note: Annotated[str | None, Form(max_length=1000)] = None,
    face_box: Annotated[
        str | None,
        Form(max_length=MAX_BOX_TEXT, description="[x, y, w, h]: match only this face"),
    ] = None,
) -> SightingOut:
    report = SightingReport(place, seen_at, estimated_age, note)
    box = parse_box(face_box)
    face = None if box is None else FaceChoice(box=box)
    data = await read_upload(file, state.container.settings.max_upload_bytes)
    return SightingOut.of(await state.run(sightings.submit, actor, data, report, face))


@router.get("/v1/sightings", response_model=list[SightingOut])
def own_sightings(sightings: SightingsDep, actor: Volunteer) -> list[SightingOut]:
    return [SightingOut.of(s) for s in sightings.own(actor)]


@router.get("/v1/sightings/{sighting_id}", response_model=SightingOut)
def sighting_status(sighting_id: str, sightings: SightingsDep, actor: Volunteer) -> SightingOut:
    return SightingOut.of(sightings.get(actor, sighting_id))


@router.get("/v1/review/queue", response_model=list[QueueItemOut])
def review_queue(
    review: ReviewDep,
    actor: Reviewer,
    min_score: Annotated[float | None, Query(ge=-1, le=1)] = None,
    case_ref: Annotated[str | None, Query(max_length=128, description="part of the ref")] = None,
    awaiting_me: Annotated[bool, Query(description="only those I have not decided")] = False,
) -> list[QueueItemOut]:
    items = review.queue(actor, min_score=min_score, case_ref=case_ref, awaiting_me=awaiting_me)
    return [QueueItemOut.of(c) for c in items]


@router.get("/v1/review/{candidate_id}", response_model=CandidateDetailOut)
def review_detail(candidate_id: str, review: ReviewDep, actor: Reviewer) -> CandidateDetailOut:
    return CandidateDetailOut.of(review.detail(actor, candidate_id))


@router.get("/v1/review/{candidate_id}/probe", response_class=Response, responses=IMAGE)
def review_probe(candidate_id: str, review: ReviewDep, actor: Reviewer) -> Response:
    return jpeg(review.probe_photo(actor, candidate_id))


@router.get("/v1/review/{candidate_id}/photos/{photo_id}", response_class=Response, responses=IMAGE)
def review_case_photo(
    candidate_id: str, photo_id: str, review: ReviewDep, actor: Reviewer
) -> Response:
    return jpeg(review.case_photo(actor, candidate_id, photo_id))


@router.post("/v1/review/{candidate_id}", response_model=DecisionOut)
def review_decide(
    candidate_id: str, body: DecisionIn, review: ReviewDep, actor: Reviewer
) -> DecisionOut:
    return DecisionOut.of(review.decide(actor, candidate_id, body.decision, body.note))
