"""Signed-in browsers: the session cookie, CSRF tokens, failed sign-ins, page rendering.

The cookie holds a random token (HttpOnly, SameSite=Strict, Secure over https); the server
keeps only its HMAC, the key it stands for and the CSRF token that every form and every
script's POST must carry. Ending a session deletes it on the server, and a revoked key ends
its sessions at their next request."""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from service.api.deps import AccessDep, StateDep
from service.errors import Forbidden, RateLimited
from service.matching.actors import Permission
from service.matching.views import SignedIn

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")


def chance(rate: float | None) -> str:
    """A false-match rate as people say it: "1 in 2,300", or a percentage when common."""
    if rate is None:
        return "not estimated for this model"
    if rate >= 0.01:
        return f"{rate:.0%}"
    if rate < 1e-9:
        return "under 1 in a billion"
    return f"1 in {round(1 / rate):,}"


templates.env.filters["chance"] = chance

COOKIE = "homeward_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SIGN_IN_WINDOW_SECONDS = 600.0

# The pages each permission opens, in the order the navigation shows them.
PAGES = (
    (Permission.SIGHTINGS, "/", "Report a sighting"),
    (Permission.REVIEW, "/review", "Review"),
    (Permission.CASES, "/cases", "Cases"),
    (Permission.ADMIN, "/admin", "Admin"),
)


class SignInGuard:
    """Failed sign-ins per client address, in a sliding window: past the limit, sign-in is
    refused (429) until the oldest failure leaves the window."""

    def __init__(self, attempts: int, window: float = SIGN_IN_WINDOW_SECONDS) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        with self._lock:
            recent = self._recent(client, time.monotonic())
            if len(recent) >= self.attempts:
                wait = math.ceil(recent[0] + self.window - time.monotonic())
                raise RateLimited(
                    "too many failed sign-ins from this address; try again later",
                    retry_after=max(1, wait),
                )

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client, time.monotonic()).append(time.monotonic())

    def _recent(self, client: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        return recent


def guard_of(request: Request) -> SignInGuard:
    guard: SignInGuard = request.app.state.sign_in_guard
    return guard


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def signed_in(request: Request, access: AccessDep, state: StateDep) -> SignedIn:
    """The browser's session (Unauthorized: the page handler sends it to sign in), after
    the key's rate limit, as for the API."""
    visitor = await state.run_light(access.session, request.cookies.get(COOKIE))
    state.take_request(visitor.key_id, frozenset(visitor.roles))
    return visitor


Visitor = Annotated[SignedIn, Depends(signed_in)]


def page_for(permission: Permission) -> Any:
    """The visitor, refused (403 page) unless their roles hold ``permission``."""

    def check(visitor: Visitor) -> SignedIn:
        visitor.actor.require(permission)
        return visitor

    return Depends(check)


async def checked_csrf(request: Request, visitor: Visitor) -> SignedIn:
    """The visitor of a POST, refused (403) unless the form's or header's CSRF token is the
    session's own."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and _is_form(request):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), visitor.csrf_token.encode()):
        raise Forbidden("the form is out of date or was not sent by this site; reload the page")
    return visitor


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


Poster = Annotated[SignedIn, Depends(checked_csrf)]


def render(
    request: Request, name: str, visitor: SignedIn | None, code: int = 200, **context: Any
) -> HTMLResponse:
    """A page, with the navigation the visitor's roles open."""
    nav = (
        []
        if visitor is None
        else [(path, label) for permission, path, label in PAGES if visitor.actor.may(permission)]
    )
    values = {"visitor": visitor, "nav": nav, "path": request.url.path, **context}
    return templates.TemplateResponse(request, name, values, status_code=code)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def set_session_cookie(request: Request, response: Response, token: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
