"""The FastAPI app factory. State is built in the lifespan and reached through dependencies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api import docs, errors, forms
from service.api.deps import AppState
from service.api.middleware import BodyLimit, RequestTelemetry
from service.api.ratelimit import limiter_for
from service.api.routes import admin, ageing, cases, match, sightings, system
from service.container import Container
from service.observability import configure_logging
from service.settings import Settings
from service.web import install as install_pages
from service.web.signin import error_page, wants_page
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
    if not logging.getLogger().handlers:  # a process uvicorn started (--workers N)
        configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="homeward")
        light = ThreadPoolExecutor(LIGHT_THREADS, thread_name_prefix="homeward-light")
        built = container(settings)
        await loop.run_in_executor(pool, built.prepare)  # a bad setting or model stops here
        limiter = limiter_for(settings.redis_url, settings.rate_limits)
        state = AppState(built, pool, light, limiter)
        app.state.homeward = state
        worker = Worker(built) if settings.runs_worker else None
        loading = loop.run_in_executor(pool, _load, state, worker)  # answers /healthz meanwhile
        try:
            yield
        finally:
            await loading
            if worker:
                worker.stop()
            await loop.run_in_executor(pool, built.close)
            pool.shutdown(wait=True)
            light.shutdown(wait=True)

    app = FastAPI(
        docs_url=None,  # served by service.api.docs from the service's own files
        redoc_url=None,
        title="Homeward",
        version=__version__,
        lifespan=lifespan,
        responses=errors.RESPONSES,
        description="Face matching for missing children. Every result is a list of "
        "candidates for people to review; the service never declares a match.",
    )
    errors.install(app, pages=(wants_page, error_page))
    forms.refuse_undecodable_fields()
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + FORM_OVERHEAD_BYTES)
    app.add_middleware(RequestTelemetry)  # outermost: the request id is set for all the rest
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
    install_pages(app, settings)
    return app


def _load(state: AppState, worker: Worker | None) -> None:
    """Load the index and the rest (minutes for a large gallery without a snapshot); until
    then /readyz and the use cases answer 503, /healthz 200."""
    started = time.monotonic()
    try:
        state.container.load_all()
    except Exception as err:  # reported by /readyz and the log; the process stays up
        state.failure = f"the service could not load: {err}"
        logger.exception("the service could not load")
        return
    state.ready.set()
    if worker:
        worker.start()
    index = state.container.index
    logger.info(
        "ready in %.1f s: model %s, index %s %s, %d templates, generation %d",
        time.monotonic() - started,
        index.model_id,
        index.backend,
        index.index_type,
        index.size,
        index.generation,
    )
