"""Errors -> HTTP statuses, in one place. Every error body is ``{"detail", "reason"}``:
``detail`` for people, ``reason`` a stable code for programs (the README lists them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from service import errors
from service.api.schemas import ErrorOut
from service.observability import REQUEST_ID

# Every route's error answers, for the OpenAPI document: ``{"detail", "reason"}`` whatever
# the status (FastAPI would otherwise document its own 422 body, which this API never sends).
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorOut, "description": "the request was refused; `reason` says why"},
    "5XX": {"model": ErrorOut, "description": "storage, audit or model unavailable"},
}

STATUS: dict[type[errors.HomewardError], int] = {
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.ImageTooLarge: 413,
    errors.UnsupportedImageFormat: 415,
    errors.ImageRejected: 422,
    errors.NoFaceFound: 422,
    errors.FaceRejected: 422,
    errors.InvalidInput: 422,
    errors.RateLimited: 429,
    errors.ModelUnavailable: 503,
    errors.NotReady: 503,
    errors.StorageUnavailable: 503,
    errors.StorageFull: 507,
    errors.PhotoKeyMismatch: 503,
}
HTTP_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def status_of(err: errors.HomewardError) -> int:
    for kind in type(err).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


# A page's errors: set by ``install`` when the app serves web pages.
PageErrors = tuple[Callable[[Request], bool], Callable[[Request, int, str, str], Response]]


def error_body(
    detail: str, reason: str, status: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"detail": detail, "reason": reason, "request_id": REQUEST_ID.get()}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI, pages: PageErrors | None = None) -> None:
    """One handler per kind of error; with ``pages`` (is this a page?, render it), a
    browser's page request gets an error page instead of the JSON body."""

    def answer(
        request: Request,
        detail: str,
        reason: str,
        status: int,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        if pages is not None and pages[0](request):
            page = pages[1](request, status, detail, reason)
            page.headers.update(headers or {})
            return page
        return error_body(detail, reason, status, headers)

    async def homeward_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, errors.HomewardError)
        status = status_of(err)
        headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
        if isinstance(err, errors.RateLimited):
            headers = {"Retry-After": str(err.retry_after)}
        return answer(request, str(err), err.reason, status, headers)

    async def http_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, HTTPException)
        reason = HTTP_REASONS.get(err.status_code, HTTPStatus(err.status_code).phrase.lower())
        detail = err.detail if isinstance(err.detail, str) else HTTPStatus(err.status_code).phrase
        return answer(request, detail, reason.replace(" ", "_"), err.status_code, err.headers)

    async def validation_error(request: Request, err: Exception) -> Response:
        """Which fields are wrong and why; the input itself is never echoed (it may be a
        child's name, or a value JSON cannot even hold)."""
        assert isinstance(err, RequestValidationError)
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in err.errors()
        ]
        return answer(request, "; ".join(problems) or "invalid request", "invalid_input", 422)

    app.add_exception_handler(errors.HomewardError, homeward_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
