"""Dependencies: the state built in the lifespan, the caller's key, bounded uploads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request, Security, UploadFile
from fastapi.security import APIKeyHeader

from service.container import Services
from service.errors import ImageTooLarge
from service.matching import Homeward
from service.registry.models import ApiKey

T = TypeVar("T")


@dataclass
class AppState:
    services: Services
    pool: ThreadPoolExecutor

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
    name="X-API-Key",
    auto_error=False,
    description="an API key; the first start prints the admin key",
)


async def require_key(
    state: StateDep, key: Annotated[str | None, Security(_api_key_header)]
) -> ApiKey:
    if not key:
        raise HTTPException(401, "missing X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})
    row = await state.run(state.services.keys.verify, key)
    if row is None:
        raise HTTPException(
            401, "invalid or revoked API key", headers={"WWW-Authenticate": "ApiKey"}
        )
    return row


CallerDep = Annotated[ApiKey, Depends(require_key)]


async def read_upload(upload: UploadFile, state: AppState) -> bytes:
    """The upload's bytes, refusing more than the configured cap without reading it all."""
    limit = state.services.settings.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLarge(f"upload is larger than the limit of {limit} bytes")
    return data
