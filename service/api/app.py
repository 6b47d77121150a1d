"""The FastAPI app factory. State is built in the lifespan and reached through dependencies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api import docs, errors, forms
from service.api.deps import AppState
from service.api.middleware import BodyLimit, SecurityHeaders
from service.api.ratelimit import RateLimiter
from service.api.routes import admin, ageing, cases, match, sightings, system
from service.container import Container
from service.settings import Settings
from service.worker import Worker

logger = logging.getLogger(__name__)

# Multipart framing around the image; the image itself is capped separately.
FORM_OVERHEAD_BYTES = 64 * 1024
LIGHT_THREADS = 4


def create_app(
    settings: Settings | None = None,
    container: Callable[[Settings], Container] = Container,
) -> FastAPI:
    """The API. ``container`` builds (or hands over) the parts: tests pass one that shares
    models across apps. The background loops run in-process when ``settings.runs_worker``."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="homeward")
        light = ThreadPoolExecutor(LIGHT_THREADS, thread_name_prefix="homeward-light")
        built = container(settings)
        await asyncio.get_running_loop().run_in_executor(pool, _start, built)
        app.state.homeward = AppState(built, pool, light, RateLimiter(settings.rate_limits))
        worker = Worker(built) if settings.runs_worker else None
        if worker:
            worker.start()
        try:
            yield
        finally:
            if worker:
                worker.stop()
            await asyncio.get_running_loop().run_in_executor(pool, built.close)
            pool.shutdown(wait=True)
            light.shutdown(wait=True)

    app = FastAPI(
        docs_url=None,  # served by service.api.docs from the service's own files
        redoc_url=None,
        title="Homeward",
        version=__version__,
        lifespan=lifespan,
        description="Face matching for missing children. Every result is a list of "
        "candidates for people to review; the service never declares a match.",
    )
    errors.install(app)
    forms.refuse_undecodable_fields()
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + FORM_OVERHEAD_BYTES)
    app.add_middleware(SecurityHeaders)
    docs.install(app)
    routers = (
        cases.router,
        ageing.router,
        match.router,
        sightings.router,
        admin.router,
        admin.org_router,
        system.router,
    )
    for router in routers:
        app.include_router(router)
    return app


def _start(built: Container) -> None:
    built.ensure_admin_key()
    built.load_all()
