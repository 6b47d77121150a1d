"""Cases and their photos: a registry manages its own organisation's cases."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile

from service.api.deps import CasesDep, EnrollmentDep, StateDep, read_upload, require
from service.api.forms import MAX_BOX_TEXT, parse_box
from service.api.schemas import CaseOut, CasePage, EnrollmentOut, jpeg
from service.faces.pipeline import FaceChoice
from service.matching.actors import Actor, Permission
from service.matching.cases import CaseChanges, CaseStatus, NewCase
from service.matching.enrollment import PhotoDetails

router = APIRouter(prefix="/v1/cases", tags=["cases"])
CasesActor = Annotated[Actor, Depends(require(Permission.CASES))]


@router.post("", status_code=201, response_model=CaseOut)
def create_case(body: NewCase, cases: CasesDep, actor: CasesActor) -> CaseOut:
    return CaseOut.of(cases.create(actor, body))


@router.get("", response_model=CasePage)
def list_cases(
    cases: CasesDep,
    actor: CasesActor,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: CaseStatus | None = None,
    q: Annotated[str | None, Query(max_length=100, description="part of a name or ref")] = None,
) -> CasePage:
    return CasePage.of(cases.page(actor, offset, limit, status, q))


@router.get("/{case_id}", response_model=CaseOut)
def get_case(case_id: str, cases: CasesDep, actor: CasesActor) -> CaseOut:
    return CaseOut.of(cases.get(actor, case_id))


@router.patch("/{case_id}", response_model=CaseOut)
def update_case(case_id: str, body: CaseChanges, cases: CasesDep, actor: CasesActor) -> CaseOut:
    return CaseOut.of(cases.update(actor, case_id, body))


@router.delete("/{case_id}", status_code=204)
def delete_case(case_id: str, cases: CasesDep, actor: CasesActor) -> Response:
    cases.delete(actor, case_id)
    return Response(status_code=204)


@router.post("/{case_id}/photos", status_code=201, response_model=EnrollmentOut)
async def add_photo(
    case_id: str,
    enrollment: EnrollmentDep,
    state: StateDep,
    actor: CasesActor,
    file: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    taken_on: Annotated[date | None, Form()] = None,
    age_at_photo: Annotated[float | None, Form(ge=0, le=100)] = None,
    face_index: Annotated[int | None, Form(ge=0, le=100, description="0 = largest face")] = None,
    face_box: Annotated[
        str | None, Form(max_length=MAX_BOX_TEXT, description="[x, y, w, h] of the face to use")
    ] = None,
) -> EnrollmentOut:
    details = PhotoDetails(taken_on, age_at_photo, FaceChoice(face_index, parse_box(face_box)))
    data = await read_upload(file, state.container.settings.max_upload_bytes)
    return EnrollmentOut.of(await state.run(enrollment.enroll, actor, case_id, data, details))


@router.get(
    "/{case_id}/photos/{photo_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def photo_image(case_id: str, photo_id: str, cases: CasesDep, actor: CasesActor) -> Response:
    """The stored photo (re-encoded, no metadata); every view is audited."""
    return jpeg(cases.photo_image(actor, case_id, photo_id))


@router.delete("/{case_id}/photos/{photo_id}", status_code=204)
def delete_photo(case_id: str, photo_id: str, cases: CasesDep, actor: CasesActor) -> Response:
    cases.delete_photo(actor, case_id, photo_id)
    return Response(status_code=204)
