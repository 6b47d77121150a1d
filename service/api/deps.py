"""Dependencies: the state built in the lifespan, the caller, bounded uploads."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, Security, UploadFile
from fastapi.security import APIKeyHeader

from service.api.access import Permission, allowed
from service.api.ratelimit import RateLimiter
from service.audit import Actor
from service.container import Services
from service.errors import ImageTooLarge
from service.matching import Homeward

T = TypeVar("T")


@dataclass
class AppState:
    services: Services
    pool: ThreadPoolExecutor
    limiter: RateLimiter

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Blocking work (decoding, inference, SQL, index search) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.homeward
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_homeward(state: StateDep) -> Homeward:
    return state.services.homeward


HomewardDep = Annotated[Homeward, Depends(get_homeward)]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key; the first start prints one"
)


async def authenticate(
    state: StateDep, key: Annotated[str | None, Security(_api_key_header)]
) -> Actor:
    """The caller behind the key, after the key's rate limit."""
    challenge = {"WWW-Authenticate": "ApiKey"}
    if not key:
        raise HTTPException(401, "missing X-API-Key header", headers=challenge)
    row = await state.run(state.services.keys.verify, key)
    if row is None:
        raise HTTPException(401, "invalid, expired or revoked API key", headers=challenge)
    wait = state.limiter.take(row.key_id, row.role_set)
    if wait > 0:
        raise HTTPException(
            429,
            "rate limit exceeded for this key",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return Actor(row.key_id, row.org_id, row.role_set)


def require(permission: Permission) -> Callable[..., Coroutine[Any, Any, Actor]]:
    """A dependency that lets only callers whose roles hold ``permission`` through (403)."""

    async def check(actor: Annotated[Actor, Depends(authenticate)]) -> Actor:
        if not allowed(actor.roles, permission):
            raise HTTPException(
                403,
                f"this key's roles ({', '.join(sorted(actor.roles))}) "
                f"do not allow {permission.value}",
            )
        return actor

    return check


async def read_upload(upload: UploadFile, state: AppState) -> bytes:
    """The upload's bytes, refusing more than the configured cap without reading it all."""
    limit = state.services.settings.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"upload is larger than the limit of {limit} bytes")
    return data
