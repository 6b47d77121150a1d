"""Cases and their photos: a registry manages its own organisation's cases."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile

from service.api.access import Permission
from service.api.deps import HomewardDep, StateDep, read_upload, require
from service.api.schemas import (
    CaseCreate,
    CaseOut,
    CasePage,
    CasePatch,
    CaseStatus,
    EnrollmentOut,
    FaceOut,
    PhotoOut,
)
from service.audit import Actor
from service.errors import InvalidInput
from service.faces.pipeline import FaceChoice

router = APIRouter(prefix="/v1/cases", tags=["cases"])
CasesActor = Annotated[Actor, Depends(require(Permission.CASES))]


@router.post("", status_code=201, response_model=CaseOut)
async def create_case(
    body: CaseCreate, homeward: HomewardDep, state: StateDep, actor: CasesActor
) -> CaseOut:
    return CaseOut.of(await state.run(homeward.create_case, actor, body.model_dump()))


@router.get("", response_model=CasePage)
async def list_cases(
    homeward: HomewardDep,
    state: StateDep,
    actor: CasesActor,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: CaseStatus | None = None,
) -> CasePage:
    items, total = await state.run(homeward.list_cases, actor, offset, limit, status)
    return CasePage(items=[CaseOut.of(c) for c in items], total=total, offset=offset, limit=limit)


@router.get("/{case_id}", response_model=CaseOut)
async def get_case(
    case_id: str, homeward: HomewardDep, state: StateDep, actor: CasesActor
) -> CaseOut:
    return CaseOut.of(await state.run(homeward.get_case, actor, case_id))


@router.patch("/{case_id}", response_model=CaseOut)
async def update_case(
    case_id: str, body: CasePatch, homeward: HomewardDep, state: StateDep, actor: CasesActor
) -> CaseOut:
    fields = body.model_dump(exclude_unset=True)
    if fields.get("display_name", "") is None:
        raise InvalidInput("display_name cannot be null")
    return CaseOut.of(await state.run(homeward.update_case, actor, case_id, fields))


@router.delete("/{case_id}", status_code=204)
async def delete_case(
    case_id: str, homeward: HomewardDep, state: StateDep, actor: CasesActor
) -> Response:
    await state.run(homeward.delete_case, actor, case_id)
    return Response(status_code=204)


@router.post("/{case_id}/photos", status_code=201, response_model=EnrollmentOut)
async def add_photo(
    case_id: str,
    homeward: HomewardDep,
    state: StateDep,
    actor: CasesActor,
    file: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    taken_on: Annotated[date | None, Form()] = None,
    age_at_photo: Annotated[float | None, Form(ge=0, le=100)] = None,
    face_index: Annotated[int | None, Form(ge=0, le=100, description="0 = largest face")] = None,
    face_box: Annotated[str | None, Form(description="[x, y, w, h] of the face to use")] = None,
) -> EnrollmentOut:
    if taken_on is not None and taken_on > date.today():
        raise InvalidInput("taken_on is in the future")
    choice = FaceChoice(index=face_index, box=_parse_box(face_box))
    data = await read_upload(file, state)
    enrolled = await state.run(
        lambda: homeward.enroll_photo(
            actor, case_id, data, taken_on=taken_on, age_at_photo=age_at_photo, choice=choice
        )
    )
    return EnrollmentOut(
        photo=PhotoOut.of(enrolled.photo),
        face=FaceOut.of(enrolled.analysed),
        model_id=homeward.model_id,
        aged_templates=enrolled.aged_ages,
        warnings=enrolled.warnings,
    )


@router.get(
    "/{case_id}/photos/{photo_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def photo_image(
    case_id: str, photo_id: str, homeward: HomewardDep, state: StateDep, actor: CasesActor
) -> Response:
    """The stored photo (re-encoded, no metadata); every view is audited."""
    data = await state.run(homeward.photo_bytes, actor, case_id, photo_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.delete("/{case_id}/photos/{photo_id}", status_code=204)
async def delete_photo(
    case_id: str, photo_id: str, homeward: HomewardDep, state: StateDep, actor: CasesActor
) -> Response:
    await state.run(homeward.delete_photo, actor, case_id, photo_id)
    return Response(status_code=204)


def _parse_box(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None or not text.strip():
        return None
    try:
        values = json.loads(text if text.strip().startswith("[") else f"[{text}]")
        box = tuple(float(v) for v in values)  # may raise on non-numbers
    except (ValueError, TypeError) as err:
        raise InvalidInput("face_box must be four numbers: [x, y, width, height]") from err
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0 or not all(abs(v) < 1e6 for v in box):
        raise InvalidInput("face_box must be [x, y, width, height] with positive width and height")
    return box[0], box[1], box[2], box[3]
