"""Per-request bookkeeping: request id, one JSON log line, Prometheus request metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logging import request_id
from service.metrics import Metrics

log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "x-request-id"
# Probes and scrapes arrive every few seconds; at info level they would drown the log.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
# A caller's id is echoed only when it is short and plain, so it cannot smuggle data into the logs.
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/units/{unit_id}``), never the raw path; ``unmatched`` for 404s."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestMiddleware:
    """Pure ASGI middleware (it does not buffer bodies, so uploads stream through)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = given if _SAFE_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), rid.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.in_flight.dec()
            route = route_template(scope)
            method = str(scope.get("method", ""))
            self.metrics.observe_request(route=route, method=method, status=status, seconds=seconds)
            log.log(
                logging.DEBUG if route in _QUIET_ROUTES and status < 400 else logging.INFO,
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "fields": {
                        "event": "request",
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000.0, 3),
                    }
                },
            )
            request_id.reset(token)
