"""Per-request bookkeeping: request id, one JSON log line, Prometheus request and error metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logging import request_id
from service.metrics import Metrics

log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "x-request-id"
# Probes and scrapes arrive every few seconds; at info level they would drown the log.
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
# A caller's id is echoed only when it is short and plain, so it cannot smuggle data into the logs.
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# The error codes of this request's error responses. A list set per request and
# appended to, rather than a value set: handlers may run in a copied context.
_error_codes: ContextVar[list[str] | None] = ContextVar("deepminer_error_codes", default=None)


def record_error_code(code: str) -> None:
    """Note the ``code`` of the error response being sent, for the errors-by-code counter."""
    codes = _error_codes.get()
    if codes is not None:
        codes.append(code)


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
        codes: list[str] = []
        codes_token = _error_codes.set(codes)
        status = 500
        escaped = False
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
        except BaseException:
            escaped = True  # answered by the outermost handler: a 500 internal_error
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.in_flight.dec()
            route = route_template(scope)
            method = str(scope.get("method", ""))
            self.metrics.observe_request(route=route, method=method, status=status, seconds=seconds)
            if escaped or status >= 400:
                code = codes[-1] if codes and not escaped else "internal_error" if status >= 500 else f"http_{status}"
                self.metrics.observe_error(code=code, status=status)
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
            _error_codes.reset(codes_token)
            request_id.reset(token)
