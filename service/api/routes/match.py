"""Match a photo against the caller's cases: a candidate list per face, for human review."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from service.api.deps import SearchDep, StateDep, read_upload, require
from service.api.schemas import MatchOut
from service.matching.actors import Actor, Permission
from service.matching.cases import Sex
from service.matching.search import MatchQuery

router = APIRouter(prefix="/v1", tags=["match"])


@router.post("/match", response_model=MatchOut)
async def match(
    search: SearchDep,
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
    query = MatchQuery(top_k, sex, min_age, max_age, min_score)
    data = await read_upload(file, state.container.settings.max_upload_bytes)
    return MatchOut.of(await state.run(search.match, actor, data, query))
