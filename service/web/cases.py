"""The cases pages: registry staff find, open, add photos to, age, print, close and delete
their organisation's cases, through the same use cases as the API's cases routes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.ageing import MAX_TARGET_AGE
from service.api.deps import CasesDep, EnrollmentDep, StateDep, read_upload
from service.api.errors import status_of
from service.api.forms import MAX_BOX_TEXT, parse_box
from service.api.routes.ageing import encode
from service.api.schemas import jpeg
from service.errors import (
    Conflict,
    FaceRejected,
    ImageRejected,
    ImageTooLarge,
    InvalidInput,
    NoFaceFound,
    NotFound,
    SeveralFaces,
    UnsupportedImageFormat,
)
from service.faces.pipeline import FaceChoice
from service.matching.actors import Actor, Permission
from service.matching.ages import aged_preview_age
from service.matching.cases import CaseChanges, CaseService, CaseStatus, NewCase
from service.matching.enrollment import EnrollmentService, PhotoDetails
from service.matching.views import CaseView, PhotoView, SignedIn
from service.web.session import Poster, page_for, render, see_other

router = APIRouter(include_in_schema=False)
CasesVisitor = Annotated[SignedIn, page_for(Permission.CASES)]
M = TypeVar("M", bound=BaseModel)

PAGE_SIZE = 25
PHOTO_MAX_SIDE = 2400  # px: the face picker sends a copy at most this big (a stored photo)
STATUSES = ("missing", "found", "closed")
CLOSE = CaseChanges.model_validate({"status": "closed"})
POSTER_YEARS_ON = (0.0, 3.0, 6.0)  # the poster's ages: expected today, then years later
# What the person can fix by changing the form (the form comes back with the reason);
# anything else (not allowed, not found, service unavailable) is an error page.
FIXABLE = (
    InvalidInput,
    Conflict,
    NoFaceFound,
    FaceRejected,
    ImageRejected,
    ImageTooLarge,
    UnsupportedImageFormat,
)
NOTICES = {
    "created": "The case was created. Add a photo so that sightings can be matched with it.",
    "photo": "The photo was added and can now be matched with sightings.",
    "closed": "The case was closed.",
    "deleted": "The case was deleted with its photos.",
}
LABELS = {
    "display_name": "Name",
    "external_ref": "Reference",
    "sex": "Sex",
    "birth_date": "Date of birth",
    "age_at_disappearance": "Age when missing",
    "missing_since": "Missing since",
    "region": "Region",
    "taken_on": "Taken on",
    "age_at_photo": "Age in the photo",
    "face_number": "Face number",
    "face_box": "Chosen face",
}
NEW_CASE_FIELDS = tuple(name for name in LABELS if name in NewCase.model_fields)
PHOTO_FIELDS = ("taken_on", "age_at_photo", "face_number", "face_box")


class PhotoForm(BaseModel):
    """The add-photo form's fields (the file aside), bounded as the API bounds them."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    taken_on: date | None = None
    age_at_photo: float | None = Field(None, ge=0, le=100)
    face_number: int | None = Field(None, ge=1, le=100)  # 1 = the largest face
    face_box: str | None = Field(None, max_length=MAX_BOX_TEXT)  # from the face picker

    def details(self) -> PhotoDetails:
        index = None if self.face_number is None else self.face_number - 1
        return PhotoDetails(
            self.taken_on, self.age_at_photo, FaceChoice(index, parse_box(self.face_box))
        )


# -- the list and a new case -----------------------------------------------------------------


@router.get("/cases")
def case_list(
    request: Request,
    cases: CasesDep,
    visitor: CasesVisitor,
    q: Annotated[str, Query(max_length=100)] = "",
    status: Annotated[CaseStatus | Literal[""], Query()] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    done: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    found = cases.page(
        visitor.actor, (page - 1) * PAGE_SIZE, PAGE_SIZE, status or None, q.strip() or None
    )
    return render(
        request,
        "cases.html",
        visitor,
        found=found,
        q=q,
        status=status,
        statuses=STATUSES,
        page=page,
        pages=max(1, math.ceil(found.total / PAGE_SIZE)),
        notice=NOTICES.get(done),
    )


@router.get("/cases/new")
def new_case_form(request: Request, visitor: CasesVisitor) -> Response:
    return render(request, "case_new.html", visitor, values={}, error=None)


@router.post("/cases/new")
async def new_case(request: Request, cases: CasesDep, state: StateDep, visitor: Poster) -> Response:
    values = await form_values(request, NEW_CASE_FIELDS)
    try:
        case = await state.run(cases.create, visitor.actor, parsed(NewCase, values))
    except FIXABLE as err:
        return render(
            request, "case_new.html", visitor, status_of(err), values=values, error=str(err)
        )
    return see_other(f"/cases/{case.id}?done=created")


# -- one case --------------------------------------------------------------------------------


@router.get("/cases/{case_id}")
def case_page(
    request: Request,
    case_id: str,
    cases: CasesDep,
    visitor: CasesVisitor,
    done: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    context = case_context(cases, visitor.actor, case_id)
    context.update(notice=NOTICES.get(done))
    return render(request, "case.html", visitor, **context)


@router.post("/cases/{case_id}/photos")
async def add_photo(
    request: Request,
    case_id: str,
    cases: CasesDep,
    enrollment: EnrollmentDep,
    state: StateDep,
    visitor: Poster,
    file: Annotated[UploadFile, File()],
) -> Response:
    """A form post goes back to the case (or the form again, with the reason); the page's
    script (asking for JSON, after the face picker) gets ``{photo_id, url}`` or the error."""
    values = await form_values(request, PHOTO_FIELDS)
    script = "application/json" in request.headers.get("accept", "")
    try:
        details = parsed(PhotoForm, values).details()
        data = await read_upload(file, state.container.settings.max_upload_bytes)
        enrolled = await state.run(enrollment.enroll, visitor.actor, case_id, data, details)
    except FIXABLE as err:
        if script:
            raise
        context = await state.run(case_context, cases, visitor.actor, case_id)
        context.update(values=values, error=photo_error(err))
        return render(request, "case.html", visitor, status_of(err), **context)
    url = f"/cases/{case_id}?done=photo"
    if script:
        return JSONResponse({"photo_id": enrolled.photo.id, "url": url}, 201)
    return see_other(url)


@router.post("/cases/{case_id}/close")
async def close_case(
    request: Request, case_id: str, cases: CasesDep, state: StateDep, visitor: Poster
) -> Response:
    if (await form_values(request, ["confirm"]))["confirm"] != "yes":
        context = await state.run(case_context, cases, visitor.actor, case_id)
        error = "Tick “Yes, close this case” to confirm closing it."
        context.update(error=error, closing=True)
        return render(request, "case.html", visitor, 422, **context)
    await state.run(cases.update, visitor.actor, case_id, CLOSE)
    return see_other(f"/cases/{case_id}?done=closed")


@router.get("/cases/{case_id}/delete")
def delete_form(request: Request, case_id: str, cases: CasesDep, visitor: CasesVisitor) -> Response:
    case = cases.get(visitor.actor, case_id)
    return render(request, "case_delete.html", visitor, case=case, error=None)


@router.post("/cases/{case_id}/delete")
async def delete_case(
    request: Request, case_id: str, cases: CasesDep, state: StateDep, visitor: Poster
) -> Response:
    case = await state.run(cases.get, visitor.actor, case_id)
    if not confirms_deletion(case, (await form_values(request, ["confirm"]))["confirm"]):
        error = "What you typed is not this case's reference or name; nothing was deleted."
        return render(request, "case_delete.html", visitor, 422, case=case, error=error)
    await state.run(cases.delete, visitor.actor, case_id)
    return see_other("/cases?done=deleted")


# -- photos: the stored one, aged to today, a poster's contact sheet -------------------------


@router.get("/cases/{case_id}/photos/{photo_id}.jpg")
def photo_image(case_id: str, photo_id: str, cases: CasesDep, visitor: CasesVisitor) -> Response:
    """The stored photo (re-encoded, no metadata); every view is audited."""
    return jpeg(cases.photo_image(visitor.actor, case_id, photo_id))


@router.get("/cases/{case_id}/photos/{photo_id}/aged.jpg")
async def aged_image(
    case_id: str,
    photo_id: str,
    cases: CasesDep,
    enrollment: EnrollmentDep,
    state: StateDep,
    visitor: CasesVisitor,
) -> Response:
    """The photo's face aged to the child's expected age today."""
    args = (cases, enrollment, visitor.actor, case_id, photo_id, False)
    return jpeg(await state.run(aged_jpeg, *args))


@router.get("/cases/{case_id}/photos/{photo_id}/sheet.jpg")
async def sheet_image(
    case_id: str,
    photo_id: str,
    cases: CasesDep,
    enrollment: EnrollmentDep,
    state: StateDep,
    visitor: CasesVisitor,
) -> Response:
    """The photo beside its face aged to today and a few years on (for the poster)."""
    args = (cases, enrollment, visitor.actor, case_id, photo_id, True)
    return jpeg(await state.run(aged_jpeg, *args))


@router.get("/cases/{case_id}/poster")
def poster(
    request: Request,
    case_id: str,
    cases: CasesDep,
    visitor: CasesVisitor,
    photo: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """A printable page: the case's facts and its photo aged, when it can be, else as is."""
    case = cases.get(visitor.actor, case_id)
    chosen = poster_photo(case, photo or None)
    sheet = chosen is not None and can_age(visitor.actor, case, chosen)
    ages = ", ".join(f"{age:g}" for age in poster_ages(case))
    return render(request, "poster.html", visitor, case=case, photo=chosen, sheet=sheet, ages=ages)


# -- helpers ---------------------------------------------------------------------------------


def case_context(cases: CaseService, actor: Actor, case_id: str) -> dict[str, Any]:
    """What the case page shows (blocking: SQL)."""
    case = cases.get(actor, case_id)
    return {
        "case": case,
        "sightings": cases.confirmed_sightings(actor, case_id),
        "aged": {p.id for p in case.photos if can_age(actor, case, p)},
        "values": {},
        "error": None,
        "notice": None,
        "closing": False,
        "max_side": PHOTO_MAX_SIDE,
    }


def preview_age(case: CaseView, photo: PhotoView) -> float | None:
    return aged_preview_age(photo.age_at_photo, case.expected_age_today)


def can_age(actor: Actor, case: CaseView, photo: PhotoView) -> bool:
    return actor.may(Permission.AGEING) and preview_age(case, photo) is not None


def poster_ages(case: CaseView) -> list[float]:
    now = case.expected_age_today
    if now is None:
        return []
    return [round(now + years, 1) for years in POSTER_YEARS_ON if now + years <= MAX_TARGET_AGE]


def poster_photo(case: CaseView, photo_id: str | None) -> PhotoView | None:
    """The photo asked for, else of those that can be aged the one of the oldest child (the
    closest to today's face), else the newest."""
    if photo_id is not None:
        chosen = next((p for p in case.photos if p.id == photo_id), None)
        if chosen is None:
            raise NotFound(f"photo {photo_id} not found in case {case.id}")
        return chosen
    ageable = [p for p in case.photos if preview_age(case, p) is not None]
    if ageable:
        return max(ageable, key=lambda p: p.age_at_photo or 0.0)
    return case.photos[-1] if case.photos else None


def aged_jpeg(
    cases: CaseService,
    enrollment: EnrollmentService,
    actor: Actor,
    case_id: str,
    photo_id: str,
    sheet: bool,
) -> bytes:
    """The photo's face aged to today (or the poster's contact sheet), as JPEG (blocking)."""
    case = cases.get(actor, case_id)
    photo = next((p for p in case.photos if p.id == photo_id), None)
    age = None if photo is None else preview_age(case, photo)
    if age is None:
        raise NotFound(f"no aged version of photo {photo_id} in case {case_id}")
    aged = enrollment.age_case_photo(
        actor, case_id, photo_id, poster_ages(case) if sheet else [age]
    )
    return encode(aged.sheet() if sheet else aged.aged[0].image, "jpeg")


def photo_error(err: Exception) -> str:
    """The add-photo form's message: the API's, in the form's words for a face choice."""
    if isinstance(err, SeveralFaces):
        return (
            f"This photo shows {err.count} faces: enter the child's face number "
            "(1 is the largest face, 2 the next…)."
        )
    return str(err)


def confirms_deletion(case: CaseView, typed: str) -> bool:
    """Whether the person typed the case's reference or name (case and spacing aside)."""
    said = " ".join(typed.split()).casefold()
    names = (case.external_ref, case.display_name)
    return bool(said) and said in {" ".join(n.split()).casefold() for n in names if n}


async def form_values(request: Request, names: Iterable[str]) -> dict[str, str]:
    """The form's text fields ``names``, "" when absent (the form is parsed once)."""
    form = await request.form()
    return {name: value if isinstance(value := form.get(name), str) else "" for name in names}


def parsed(model: type[M], values: Mapping[str, str]) -> M:
    """The form's non-blank values as ``model``; InvalidInput naming each wrong field (the
    values themselves are never echoed in the message)."""
    try:
        return model.model_validate({k: v for k, v in values.items() if v.strip()})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            field = str(e["loc"][0]) if e["loc"] else ""
            problems.append(f"{LABELS.get(field, field or 'form')}: {e['msg']}")
        raise InvalidInput("; ".join(problems)) from err
