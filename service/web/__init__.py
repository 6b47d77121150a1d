"""The web pages: volunteers, reviewers, registry staff and admins, served by the service.

Pages are thin like the API's routes: each calls the same use cases (same permissions,
audit and errors) as the route or CLI command doing the same thing. A browser signs in with
an API key, exchanged for a server-side session (``session.py``)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.settings import Settings
from service.web import admin, cases, review, signin, volunteer
from service.web.session import STATIC_DIR, SignInGuard


def install(app: FastAPI, settings: Settings) -> None:
    app.state.sign_in_guard = SignInGuard(settings.sign_in_attempts)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (signin, volunteer, review, cases, admin):
        app.include_router(module.router)
