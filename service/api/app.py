"""The FastAPI app factory. State is built in the lifespan and reached through dependencies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from service import __version__
from service.api import errors
from service.api.deps import AppState
from service.api.ratelimit import RateLimiter
from service.api.routes import admin, ageing, cases, match, sightings, system
from service.container import Services, build_services, ensure_admin_key
from service.settings import Settings

logger = logging.getLogger(__name__)

SNAPSHOT_EVERY_SECONDS = 60.0
# Multipart framing around the image; the image itself is capped separately.
FORM_OVERHEAD_BYTES = 64 * 1024


def create_app(
    settings: Settings | None = None, services: Callable[[Settings], Services] = build_services
) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="homeward")
        built = await asyncio.get_running_loop().run_in_executor(pool, services, settings)
        ensure_admin_key(built.keys, settings)
        app.state.homeward = AppState(built, pool, RateLimiter(settings.rate_limits))
        snapshots = asyncio.create_task(_snapshot_periodically(app.state.homeward))
        stop_webhooks = threading.Event()
        webhooks = threading.Thread(
            target=built.webhooks.run, args=(stop_webhooks,), name="homeward-webhooks", daemon=True
        )
        webhooks.start()
        try:
            yield
        finally:
            stop_webhooks.set()
            webhooks.join(timeout=10)
            snapshots.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await snapshots
            await asyncio.get_running_loop().run_in_executor(pool, built.close)
            pool.shutdown(wait=True)

    app = FastAPI(
        title="Homeward",
        version=__version__,
        lifespan=lifespan,
        description="Face matching for missing children. Every result is a list of "
        "candidates for people to review; the service never declares a match.",
    )
    errors.install(app)
    app.middleware("http")(_limit_body(settings.max_upload_bytes + FORM_OVERHEAD_BYTES))
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


def _limit_body(
    limit: int,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return JSONResponse({"detail": "bad Content-Length", "reason": "bad_request"}, 400)
            if int(length) > limit:
                return JSONResponse(
                    {"detail": f"request body over {limit} bytes", "reason": "image_too_large"}, 413
                )
        return await call_next(request)

    return middleware


async def _snapshot_periodically(state: AppState) -> None:
    """Write an index snapshot when templates changed, so a restart replays little."""
    keeper = state.services.homeward.keeper
    saved = keeper.generation
    while True:
        await asyncio.sleep(SNAPSHOT_EVERY_SECONDS)
        if keeper.generation != saved:
            saved = keeper.generation
            await state.run(keeper.save)
