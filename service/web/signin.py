"""Signing in with an API key, signing out, and the error pages."""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from service.api.deps import AccessDep, SettingsDep, StateDep
from service.api.middleware import API_PATHS, DOCS_PATHS
from service.errors import HomewardError, Unauthorized
from service.matching.views import SignedIn
from service.web.session import (
    COOKIE,
    Poster,
    client_address,
    guard_of,
    render,
    see_other,
    set_session_cookie,
)

router = APIRouter(include_in_schema=False)
SIGN_IN_COOKIE = "homeward_sign_in"  # double-submit token of the sign-in form
NOT_PAGES = (*API_PATHS, *DOCS_PATHS, "/static")


@router.get("/signin")
def sign_in_form(request: Request, next: str = "/") -> Response:
    return _form(request, _safe_next(next))


@router.post("/signin")
async def sign_in(
    request: Request,
    access: AccessDep,
    settings: SettingsDep,
    state: StateDep,
    api_key: Annotated[str, Form(max_length=600)],
    form_token: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    client = client_address(request)
    guard = guard_of(request)
    guard.check(client)
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not hmac.compare_digest(form_token.encode(), expected.encode()):
        return _form(request, next, "The sign-in form had expired; please try again.", 403)
    lifetime = timedelta(minutes=settings.session_minutes)
    try:
        token, _ = await state.run_light(access.sign_in, api_key.strip(), lifetime)
    except Unauthorized:
        guard.failed(client)
        return _form(request, next, "That key was not accepted.", 401)
    response = see_other(_safe_next(next))
    set_session_cookie(request, response, token, int(lifetime.total_seconds()))
    response.delete_cookie(SIGN_IN_COOKIE, path="/signin")
    return response


@router.post("/signout")
async def sign_out(
    request: Request, visitor: Poster, access: AccessDep, state: StateDep
) -> Response:
    await state.run_light(access.sign_out, request.cookies.get(COOKIE))
    response = see_other("/signin")
    response.delete_cookie(COOKIE, path="/")
    return response


def _form(request: Request, next: str, error: str | None = None, status: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request, "signin.html", None, status, form_token=token, next=next, error=error
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=3600,
        path="/signin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _safe_next(target: str) -> str:
    """Only a path on this site (never another host) after signing in."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def wants_page(request: Request) -> bool:
    """A browser asking for a page (not the API, nor a page's script asking for JSON)."""
    path = request.url.path
    return not path.startswith(NOT_PAGES) and "text/html" in request.headers.get("accept", "")


def error_page(request: Request, status: int, detail: str, reason: str) -> Response:
    """A page's error: to the sign-in form when the session is missing or ended, else a
    page that says what went wrong."""
    if status == 401 and request.method == "GET":
        return see_other(f"/signin?next={quote(request.url.path)}")
    visitor = _visitor_if_any(request) if status != 401 else None
    return render(
        request, "error.html", visitor, status, status=status, detail=detail, reason=reason
    )


def _visitor_if_any(request: Request) -> SignedIn | None:
    """The signed-in visitor, so an error page keeps the navigation; None when the session
    cannot be read (the error may be the database's own)."""
    state = getattr(request.app.state, "homeward", None)
    if state is None or not state.ready.is_set():
        return None
    try:
        visitor: SignedIn = state.container.access.session(request.cookies.get(COOKIE))
    except HomewardError:
        return None
    return visitor
