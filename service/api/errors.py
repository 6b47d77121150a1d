"""Domain errors -> HTTP statuses, in one place. Bodies are ``{"detail", "reason"}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service import errors
from service.audit import AuditUnavailable
from service.security import PhotoKeyMismatch

STATUS: dict[type[errors.HomewardError], int] = {
    errors.ImageTooLarge: 413,
    errors.UnsupportedImageFormat: 415,
    errors.ImageRejected: 422,
    errors.NoFaceFound: 422,
    errors.FaceRejected: 422,
    errors.InvalidInput: 422,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.ModelUnavailable: 503,
    AuditUnavailable: 503,
    PhotoKeyMismatch: 503,
}


def status_of(err: errors.HomewardError) -> int:
    for kind in type(err).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


async def _homeward_error(_request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, errors.HomewardError)
    return JSONResponse({"detail": str(err), "reason": err.reason}, status_code=status_of(err))


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.HomewardError, _homeward_error)
