"""Info and health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from service import __version__
from service.api.deps import MaintenanceDep, require
from service.api.schemas import InfoOut
from service.matching.actors import Actor, Permission

router = APIRouter(tags=["system"])


@router.get("/v1/info", response_model=InfoOut)
def info(
    maintenance: MaintenanceDep, actor: Annotated[Actor, Depends(require(Permission.INFO))]
) -> InfoOut:
    return InfoOut.of(__version__, maintenance.info(actor))


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(maintenance: MaintenanceDep, response: Response) -> dict[str, str]:
    """Ready to serve: the database answers and the index is loaded."""
    problems = maintenance.readiness()
    if problems:
        response.status_code = 503
        detail = "; ".join(problems)
        return {"status": "not ready", "detail": detail, "reason": "not_ready"}
    return {"status": "ready"}
