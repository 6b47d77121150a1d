"""The volunteer page: report a sighting from a phone and follow its status. A volunteer
sees the faces of their own photo and the status of their own sightings, never gallery
photos or candidates. Each action is the use case the API's sighting routes call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from service.api.deps import PreviewDep, SightingsDep, StateDep, read_upload
from service.api.forms import MAX_BOX_TEXT, parse_box
from service.errors import Forbidden
from service.faces.pipeline import FaceChoice
from service.matching.actors import Permission
from service.matching.preview import FacePreview
from service.matching.sightings import SightingReport
from service.matching.views import SignedIn
from service.web.session import PAGES, Poster, Visitor, page_for, render, see_other

router = APIRouter(include_in_schema=False)
VolunteerVisitor = Annotated[SignedIn, page_for(Permission.SIGHTINGS)]

# The longer side of the copy a phone sends. Faces are found on a copy at most 1280 px a
# side (DETECT_MAX_SIDE) and their chips are cut from the photo itself, so a little more
# keeps the detail of small faces while a 12 MP photo shrinks to a few hundred kB.
UPLOAD_MAX_SIDE = 1600


@router.get("/")
def volunteer_page(request: Request, visitor: Visitor, sightings: SightingsDep) -> Response:
    """The sighting form and the visitor's own sightings; others go to their first page."""
    if not visitor.actor.may(Permission.SIGHTINGS):
        return see_other(_first_page(visitor))
    return render(
        request,
        "volunteer.html",
        visitor,
        sightings=sightings.own(visitor.actor),
        max_side=UPLOAD_MAX_SIDE,
        now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M"),  # the script puts local time
    )


@router.post("/faces")
async def preview_faces(
    visitor: Poster,
    preview: PreviewDep,
    state: StateDep,
    file: Annotated[UploadFile, File()],
) -> FacePreview:
    """The photo's faces (boxes, size, sharpness, issues), for the face picker; nothing kept."""
    data = await read_upload(file, state.container.settings.max_upload_bytes)
    return await state.run(preview.preview, visitor.actor, data)


@router.post("/sightings")
async def send_sighting(
    request: Request,
    visitor: Poster,
    sightings: SightingsDep,
    state: StateDep,
    file: Annotated[UploadFile, File()],
    place: Annotated[str | None, Form(max_length=200)] = None,
    seen_at: Annotated[datetime | None, Form()] = None,
    estimated_age: Annotated[float | None, Form(ge=0, le=25)] = None,
    note: Annotated[str | None, Form(max_length=1000)] = None,
    face_box: Annotated[str | None, Form(max_length=MAX_BOX_TEXT)] = None,
) -> Response:
    """A form post goes on to the sighting's page; the page's script (asking for JSON) gets
    ``{id, status, url}`` and shows the reference number itself."""
    report = SightingReport(_text(place), seen_at, estimated_age, _text(note))
    box = parse_box(face_box)
    face = None if box is None else FaceChoice(box=box)
    data = await read_upload(file, state.container.settings.max_upload_bytes)
    sighting = await state.run(sightings.submit, visitor.actor, data, report, face)
    url = f"/sightings/{sighting.id}"
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"id": sighting.id, "status": sighting.status, "url": url}, 201)
    return see_other(url)


@router.get("/sightings/{sighting_id}")
def sighting_page(
    request: Request, sighting_id: str, visitor: VolunteerVisitor, sightings: SightingsDep
) -> Response:
    """A sighting's reference number and status: only its sender's (others get 404)."""
    sighting = sightings.get(visitor.actor, sighting_id)
    return render(request, "sighting.html", visitor, sighting=sighting)


def _first_page(visitor: SignedIn) -> str:
    for permission, path, _ in PAGES:
        if visitor.actor.may(permission):
            return path
    raise Forbidden("this key's roles open no page; ask your administrator")


def _text(value: str | None) -> str | None:
    return (value or "").strip() or None
