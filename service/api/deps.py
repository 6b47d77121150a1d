"""Dependencies: the state built in the lifespan, the caller, the use cases, bounded uploads.

Two thread pools: ``pool`` runs the heavy work (decoding, models, index search, SQL of the
use cases), ``light`` runs key checks and other cheap calls, so that slow uploads never
hold up authentication or cheap routes."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Security, UploadFile
from fastapi.security import APIKeyHeader

from service.api.ratelimit import Limiter
from service.container import Container
from service.errors import ImageTooLarge, NotReady, RateLimited
from service.matching.access import AccessService
from service.matching.actors import Actor, Permission
from service.matching.admin import AdminService
from service.matching.cases import CaseService
from service.matching.duplicates import DuplicateService
from service.matching.enrollment import EnrollmentService
from service.matching.jobs import JobService
from service.matching.maintenance import MaintenanceService
from service.matching.preview import PreviewService
from service.matching.review import ReviewService
from service.matching.search import SearchService
from service.matching.sightings import SightingService
from service.settings import Settings

T = TypeVar("T")


@dataclass
class AppState:
    container: Container
    pool: ThreadPoolExecutor
    light: ThreadPoolExecutor
    limiter: Limiter
    ready: threading.Event = field(default_factory=threading.Event)  # everything loaded
    failure: str | None = None  # why loading failed

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Blocking work (decoding, inference, SQL, index search) off the event loop, in the
        request's context (its id reaches the log lines written there)."""
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    def take_request(self, key_id: str, roles: frozenset[str]) -> None:
        """Counts one request against the key's rate limit; RateLimited past it."""
        wait = self.limiter.take(key_id, roles)
        if wait > 0:
            self.container.metrics.rate_limited.inc()
            raise RateLimited(
                "rate limit exceeded for this key", retry_after=max(1, math.ceil(wait))
            )

    async def run_light(self, fn: Callable[..., T], *args: object) -> T:
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.light, call)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.homeward
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def _use_case(name: str) -> Any:
    def get(state: StateDep) -> Any:
        if not state.ready.is_set():
            raise NotReady(state.failure or "the service is starting (loading the index)")
        return getattr(state.container, name)

    return Depends(get)


AccessDep = Annotated[AccessService, _use_case("access")]
CasesDep = Annotated[CaseService, _use_case("cases")]
EnrollmentDep = Annotated[EnrollmentService, _use_case("enrollment")]
SearchDep = Annotated[SearchService, _use_case("search")]
SightingsDep = Annotated[SightingService, _use_case("sightings")]
PreviewDep = Annotated[PreviewService, _use_case("preview")]
ReviewDep = Annotated[ReviewService, _use_case("review")]
AdminDep = Annotated[AdminService, _use_case("admin")]
MaintenanceDep = Annotated[MaintenanceService, _use_case("maintenance")]
DuplicatesDep = Annotated[DuplicateService, _use_case("duplicates")]
JobDep = Annotated[JobService, _use_case("jobs")]
SettingsDep = Annotated[Settings, _use_case("settings")]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key; the first start prints one"
)


async def authenticate(
    state: StateDep, key: Annotated[str | None, Security(_api_key_header)]
) -> Actor:
    """The caller behind the key, after the key's rate limit."""
    actor = await state.run_light(state.container.access.authenticate, key)
    state.take_request(actor.key_id, actor.roles)
    return actor


def require(permission: Permission) -> Callable[..., Coroutine[Any, Any, Actor]]:
    """The caller, refused (403) unless their roles hold ``permission``. The use cases check
    again; checking here too refuses before the body is read or validated."""

    async def check(actor: Annotated[Actor, Depends(authenticate)]) -> Actor:
        actor.require(permission)
        return actor

    return check


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The upload's bytes, refusing more than the cap without reading it all."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"upload is larger than the limit of {max_bytes} bytes")
    return data
