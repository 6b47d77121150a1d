"""Age progression of a photo: one aged image, or several as a contact sheet or a zip."""

from __future__ import annotations

import io
import zipfile
from typing import Annotated, Literal

import cv2
from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from service.api.deps import EnrollmentDep, StateDep, read_upload, require
from service.errors import InvalidInput
from service.faces.base import Image
from service.matching.actors import Actor, Permission
from service.matching.enrollment import AgedUpload

router = APIRouter(prefix="/v1", tags=["ageing"])
MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}


@router.post(
    "/ageing",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "application/zip": {}}}},
)
async def age(
    enrollment: EnrollmentDep,
    state: StateDep,
    actor: Annotated[Actor, Depends(require(Permission.AGEING))],
    file: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo of a child")],
    age_at_photo: Annotated[float, Form(ge=0, le=20)],
    target_age: Annotated[
        list[float], Form(description="one or several, each above age_at_photo, at most 25")
    ],
    sex: Annotated[Literal["female", "male"] | None, Form()] = None,
    face_index: Annotated[int | None, Form(ge=0, le=100)] = None,
    format: Annotated[Literal["jpeg", "png"], Form()] = "jpeg",
    layout: Annotated[Literal["sheet", "zip"], Form(description="for several ages")] = "sheet",
) -> Response:
    data = await read_upload(file, state.container.settings.max_upload_bytes)
    aged = await state.run(
        enrollment.age_upload, actor, data, age_at_photo, target_age, sex, face_index
    )
    return await state.run(_response, aged, format, layout)  # encoding is heavy too


def _response(aged: AgedUpload, format: str, layout: str) -> Response:
    if len(aged.aged) == 1:
        return Response(encode(aged.aged[0].image, format), media_type=MEDIA[format])
    if layout == "zip":
        return Response(
            _zip(aged, format),
            media_type="application/zip",
            headers={"Content-Disposition": 'attachment; filename="aged.zip"'},
        )
    return Response(encode(aged.sheet(), format), media_type=MEDIA[format])


def encode(image: Image, format: str) -> bytes:
    ok, buffer = cv2.imencode(".png" if format == "png" else ".jpg", image)
    if not ok:
        raise InvalidInput("the aged image could not be encoded")
    return buffer.tobytes()


def _zip(aged: AgedUpload, format: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for face in aged.aged:
            name = f"aged-{face.age:g}.{'png' if format == 'png' else 'jpg'}"
            archive.writestr(name, encode(face.image, format))
    return out.getvalue()
