"""Match a photo against the caller's cases: a candidate list per face, for human review."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service.api.access import Permission
from service.api.deps import HomewardDep, StateDep, read_upload, require
from service.api.schemas import CandidateOut, FaceMatchOut, FaceOut, MatchOut, Sex
from service.audit import Actor
from service.errors import InvalidInput
from service.matching import MatchFilters, scope_of

router = APIRouter(prefix="/v1", tags=["match"])


@router.post("/match", response_model=MatchOut)
async def match(
    homeward: HomewardDep,
    state: StateDep,
    actor: Annotated[Actor, Depends(require(Permission.MATCH))],
    file: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    top_k: Annotated[int | None, Form(ge=1, le=50, description="candidates per face")] = None,
    sex: Annotated[Sex | None, Form()] = None,
    min_age: Annotated[float | None, Form(ge=0, le=120, description="expected age today")] = None,
    max_age: Annotated[float | None, Form(ge=0, le=120)] = None,
    min_score: Annotated[
        float | None, Form(ge=-1, le=1, description="only raises the server's floor")
    ] = None,
) -> MatchOut:
    settings = state.services.settings
    if min_age is not None and max_age is not None and min_age > max_age:
        raise InvalidInput("min_age is greater than max_age")
    k = min(top_k or settings.default_candidates, settings.max_candidates)
    filters = MatchFilters(sex=sex, min_age=min_age, max_age=max_age, scope=scope_of(actor))
    data = await read_upload(file, state)
    result = await state.run(
        lambda: homeward.match(actor, data, top_k=k, filters=filters, min_score=min_score)
    )
    return MatchOut(
        faces=[
            FaceMatchOut(
                **FaceOut.of(f.analysed).model_dump(),
                candidates=[CandidateOut.of(c) for c in f.candidates],
            )
            for f in result.faces
        ],
        model_id=result.model_id,
        index_generation=result.index_generation,
        score_floor=max(settings.score_floor, min_score if min_score is not None else -1.0),
    )
