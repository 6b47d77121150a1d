"""Info, health and metrics."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service import __version__
from service.api.deps import MaintenanceDep, StateDep, require
from service.api.schemas import InfoOut
from service.errors import Forbidden, NotFound, Unauthorized
from service.matching.actors import Actor, Permission

router = APIRouter(tags=["system"])


@router.get("/v1/info", response_model=InfoOut)
def info(
    maintenance: MaintenanceDep, actor: Annotated[Actor, Depends(require(Permission.INFO))]
) -> InfoOut:
    return InfoOut.of(__version__, maintenance.info(actor))


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (liveness; it answers while the index loads)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: StateDep, response: Response) -> dict[str, str]:
    """Ready to serve: loaded, the database answers, the index is loaded and the photo key
    is the one the stored photos were sealed with."""
    if state.ready.is_set():
        problems = state.container.maintenance.readiness()
    else:
        problems = [state.failure or "starting: loading the index"]
    if problems:
        response.status_code = 503
        detail = "; ".join(problems)
        return {"status": "not ready", "detail": detail, "reason": "not_ready"}
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus metrics of this process, for whom ``HOMEWARD_METRICS_ACCESS`` allows."""
    settings = state.container.settings
    if settings.metrics_access == "off":
        raise NotFound("metrics are off (HOMEWARD_METRICS_ACCESS)")
    if settings.metrics_access == "local" and not _loopback(request):
        raise Forbidden("metrics are served to loopback clients only (HOMEWARD_METRICS_ACCESS)")
    if settings.metrics_access == "token":
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
        sent = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not token or not hmac.compare_digest(sent.encode(), token.encode()):
            raise Unauthorized("metrics need the bearer token", reason="invalid_key")
    return Response(state.container.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # not an address (a unix socket, a test client): not loopback
        return False
