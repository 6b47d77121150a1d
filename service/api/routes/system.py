"""Info and health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy import text

from service import __version__
from service.api.access import Permission
from service.api.deps import StateDep, require
from service.api.schemas import InfoOut
from service.audit import Actor
from service.faces.factory import resolve_backend_name

router = APIRouter(tags=["system"])


@router.get("/v1/info", response_model=InfoOut)
async def info(
    state: StateDep, _actor: Annotated[Actor, Depends(require(Permission.INFO))]
) -> InfoOut:
    s = state.services.settings
    homeward = state.services.homeward
    return InfoOut(
        version=__version__,
        model_backend=resolve_backend_name(s),
        model_id=homeward.model_id,
        dimension=homeward.pipeline.backend.dimension,
        index_type=s.index_type,
        index_size=len(homeward.keeper.index),
        index_generation=homeward.keeper.generation,
        index_opened=homeward.keeper.last_open,
        template_transform=homeward.keeper.transform.version,
        photos_readable=state.services.photos_readable,
        score_floor=s.score_floor,
        limits={
            "max_upload_bytes": s.max_upload_bytes,
            "max_pixels": s.max_pixels,
            "max_faces_per_image": s.max_faces_per_image,
            "max_candidates": s.max_candidates,
            "min_face_px": s.min_face_px,
            "min_sharpness": s.min_sharpness,
            "max_yaw_degrees": s.max_yaw_degrees,
        },
    )


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep, response: Response) -> dict[str, str]:
    """Ready to serve: the database answers and the index is open."""

    def check() -> None:
        with state.services.db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        await state.run(check)
    except Exception:  # any database failure means "not ready", reported as 503
        response.status_code = 503
        return {"status": "database unavailable"}
    return {"status": "ready"}
