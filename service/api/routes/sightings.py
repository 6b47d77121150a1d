"""Sightings (volunteers) and their review (reviewers of the organisations they reach)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from service.api.access import Permission
from service.api.deps import StateDep, read_upload, require
from service.api.schemas import (
    CandidateDetailOut,
    CaseOut,
    CasePhotoRef,
    DecisionIn,
    DecisionOut,
    QueueItemOut,
    ReviewOut,
    SightingOut,
)
from service.audit import Actor
from service.errors import InvalidInput
from service.sightings import REVIEWERS_NEEDED, CandidateDetail, SightingReport

router = APIRouter(tags=["sightings and review"])
Volunteer = Annotated[Actor, Depends(require(Permission.SIGHTINGS))]
Reviewer = Annotated[Actor, Depends(require(Permission.REVIEW))]


def jpeg(data: bytes) -> Response:
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.post("/v1/sightings", status_code=201, response_model=SightingOut)
async def submit_sighting(
    state: StateDep,
    actor: Volunteer,
    file: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    place: Annotated[str | None, Form(max_length=200)] = None,
    seen_at: Annotated[datetime | None, Form(description="when the child was seen")] = None,
    estimated_age: Annotated[float | None, Form(ge=0, le=25)] = None,
    note: Annotated[str | None, Form(max_length=1000)] = None,
) -> SightingOut:
    if seen_at is not None:
        seen_at = seen_at if seen_at.tzinfo else seen_at.replace(tzinfo=UTC)
        if seen_at > datetime.now(UTC):
            raise InvalidInput("seen_at is in the future")
    data = await read_upload(file, state)
    report = SightingReport(place=place, seen_at=seen_at, estimated_age=estimated_age, note=note)
    sighting = await state.run(state.services.sightings.submit, actor, data, report)
    return SightingOut.of(sighting)


@router.get("/v1/sightings", response_model=list[SightingOut])
async def own_sightings(state: StateDep, actor: Volunteer) -> list[SightingOut]:
    return [SightingOut.of(s) for s in await state.run(state.services.sightings.own, actor)]


@router.get("/v1/sightings/{sighting_id}", response_model=SightingOut)
async def sighting_status(sighting_id: str, state: StateDep, actor: Volunteer) -> SightingOut:
    return SightingOut.of(await state.run(state.services.sightings.get, actor, sighting_id))


@router.get("/v1/review/queue", response_model=list[QueueItemOut])
async def review_queue(state: StateDep, actor: Reviewer) -> list[QueueItemOut]:
    return [QueueItemOut.of(c) for c in await state.run(state.services.sightings.queue, actor)]


@router.get("/v1/review/{candidate_id}", response_model=CandidateDetailOut)
async def review_detail(candidate_id: str, state: StateDep, actor: Reviewer) -> CandidateDetailOut:
    return _detail_out(await state.run(state.services.sightings.detail, actor, candidate_id))


@router.get(
    "/v1/review/{candidate_id}/probe",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def review_probe(candidate_id: str, state: StateDep, actor: Reviewer) -> Response:
    return jpeg(await state.run(state.services.sightings.probe_photo, actor, candidate_id))


@router.get(
    "/v1/review/{candidate_id}/photos/{photo_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def review_case_photo(
    candidate_id: str, photo_id: str, state: StateDep, actor: Reviewer
) -> Response:
    data = await state.run(state.services.sightings.case_photo, actor, candidate_id, photo_id)
    return jpeg(data)


@router.post("/v1/review/{candidate_id}", response_model=DecisionOut)
async def review_decide(
    candidate_id: str, body: DecisionIn, state: StateDep, actor: Reviewer
) -> DecisionOut:
    candidate = await state.run(
        state.services.sightings.decide, actor, candidate_id, body.decision, body.note
    )
    confirms = len({r.reviewer for r in candidate.reviews if r.decision == "confirm"})
    return DecisionOut(candidate_id=candidate.id, status=candidate.status, confirmations=confirms)


def _detail_out(d: CandidateDetail) -> CandidateDetailOut:
    c = d.candidate
    return CandidateDetailOut(
        candidate_id=c.id,
        status=c.status,
        score=c.score,
        rank=c.rank,
        age_gap=d.age_gap,
        probe={
            "url": f"/v1/review/{c.id}/probe",
            "face_box": json.loads(c.face_box),
            "quality": json.loads(c.face_quality),
            "place": d.sighting.place,
            "seen_at": d.sighting.seen_at,
            "estimated_age": d.sighting.estimated_age,
        },
        case=CaseOut.of(d.case),
        case_photos=[
            CasePhotoRef(
                photo_id=p.id,
                url=f"/v1/review/{c.id}/photos/{p.id}",
                age_at_photo=p.age_at_photo,
                taken_on=p.taken_on,
                template_kinds=sorted({t.kind for t in p.templates}),
            )
            for p in d.photos
        ],
        matched_photo_id=c.photo_id,
        reviews=[
            ReviewOut(
                reviewer=r.reviewer, decision=r.decision, note=r.note, created_at=r.created_at
            )
            for r in d.reviews
        ],
        reviewers_needed=REVIEWERS_NEEDED,
    )
