"""ASGI middleware: the request body's byte cap whatever its framing, and the headers every
response carries."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observability import REQUEST_ID, request_id_from

logger = logging.getLogger("service.api.requests")

JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
# The API docs page: Swagger UI and ReDoc from the service itself, their small inline
# start-up script, and the schema fetched from the service.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
# The web pages: their own scripts, styles and images only; photos previewed from the
# device (blob:) and drawn on canvases; forms post to the service alone.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
API_PATHS = ("/v1/", "/metrics", "/healthz", "/readyz", "/openapi.json")


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 as soon as the cap is passed:
    at once from Content-Length, else while the body arrives (chunked), so no more than the
    cap is ever read or spooled. The app's own answer to the cut-off body is dropped."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            bad = not declared.isdigit()
            await _refuse(send, scope, 400 if bad else 413, self.limit)
            return
        state = {"received": 0, "refused": False}

        async def limited_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.limit:
                    state["refused"] = True
                    await _refuse(send, scope, 413, self.limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not state["refused"]:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _refuse(send: Send, scope: Scope, status: int, limit: int) -> None:
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    if status == 400:
        body = {"detail": "bad Content-Length", "reason": "bad_request"}
    else:
        upload = content_type.startswith(b"multipart/")
        reason = "image_too_large" if upload else "request_too_large"
        body = {"detail": f"request body over {limit} bytes", "reason": reason}
    data = json.dumps({**body, "request_id": REQUEST_ID.get()}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    if path.startswith(DOCS_PATHS):
        policy = DOCS_POLICY
    else:
        policy = JSON_POLICY if path.startswith(API_PATHS) else PAGE_POLICY
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"DENY"),
        (b"cache-control", b"no-store"),  # answers name children; nothing may be cached
    ]


class RequestTelemetry:
    """Gives every request its id (response header ``X-Request-ID``, every log line, every
    error body), adds ``security_headers`` to every response (a route's own Cache-Control
    wins), logs one line per request (route template, status, time: never the query
    string, which may hold a name) and counts it in the metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        token = REQUEST_ID.set(request_id_from(header))
        started, status = time.perf_counter(), 500

        extra = [*security_headers(scope["path"]), (b"x-request-id", REQUEST_ID.get().encode())]

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                present = {name.lower() for name, _ in headers}
                added = [(n, v) for n, v in extra if n not in present]
                message = {**message, "headers": [*headers, *added]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started)
            REQUEST_ID.reset(token)

    @staticmethod
    def _record(scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope["method"]
        logger.info("%s %s %d %.1f ms", method, route, status, seconds * 1000)
        state = getattr(scope.get("app"), "state", None)
        homeward = getattr(state, "homeward", None)
        if homeward is not None:
            metrics = homeward.container.metrics
            metrics.requests.labels(route, method, str(status)).inc()
            metrics.latency.labels(route, method).observe(seconds)
