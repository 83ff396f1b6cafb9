"""Exception handlers: every error leaves as ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from annotations import AnnotationConflictError, AnnotationValidationError, StoreFullError, StoreUnavailableError
from service.api.middleware import record_error_code
from service.errors import ServiceError

log = logging.getLogger(__name__)

# Where a parameter lives is not part of its name: ("query", "top_k") names "top_k".
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def error_response(status: int, code: str, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    """The JSON error body every handler returns; its ``code`` is counted in ``deepminer_errors_total``."""
    record_error_code(code)
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, "field": field}},
        headers=headers or None,
    )


def _field_name(loc: Sequence[Any]) -> str | None:
    """``("query", "top_k")`` → ``top_k``; ``("body", "a", 0)`` → ``a.0``; ``("body", 12)`` (a JSON syntax error) → ``body``."""
    if len(loc) > 1 and loc[0] in _LOCATIONS and isinstance(loc[1], str):
        loc = loc[1:]
    elif loc and loc[0] in _LOCATIONS:
        loc = loc[:1]
    return ".".join(str(p) for p in loc) or None


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc.message, extra={"fields": {"event": "error", "code": exc.code}})
    return error_response(exc.status, exc.code, exc.message, exc.field, **exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = _field_name(first.get("loc", ()))
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_response(422, "validation_error", message, field)


async def _annotation_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AnnotationValidationError)
    return error_response(422, "invalid_annotation", f"{exc.field}: {exc.message}", exc.field)


async def _store_refused_value(_: Request, exc: Exception) -> JSONResponse:
    # The store's checks (annotations.validation) refuse what the databases cannot hold; a value
    # that still reaches the database and is refused there is the client's data, not a server fault.
    assert isinstance(exc, DataError)
    reason = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
    log.warning("the database refused a value: %s", reason, extra={"fields": {"event": "store_refused_value"}})
    return error_response(422, "invalid_annotation", f"the unit-label store cannot hold a value given: {reason}")


async def _annotation_conflict(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, "annotation_conflict", str(exc), None, **{"Retry-After": "1"})


async def _store_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.error("unit-label store unavailable: %s", exc, extra={"fields": {"event": "store_unavailable"}})
    return error_response(503, "store_unavailable", "the unit-label store is unavailable", None, **{"Retry-After": "5"})


async def _store_full(_: Request, exc: Exception) -> JSONResponse:
    # No Retry-After: space comes back when an operator frees it, not after a wait.
    log.error("unit-label store full: %s", exc, extra={"fields": {"event": "store_full"}})
    return error_response(507, "store_full", "the unit-label store has no disk space left; nothing was written")


# FastAPI's words when a JSON body cannot even be decoded (not UTF-8); a JSON syntax error is already a 422.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        return error_response(422, "validation_error", "body: not a UTF-8 JSON document", "body")
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    response = error_response(exc.status_code, code, str(exc.detail), None)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc, extra={"fields": {"event": "internal_error"}})
    return error_response(500, "internal_error", "internal error; the request id in the logs has the details")


def register_error_handlers(app: FastAPI) -> None:
    """Map domain, store and validation errors to JSON responses on ``app``."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(AnnotationValidationError, _annotation_invalid)
    app.add_exception_handler(DataError, _store_refused_value)
    app.add_exception_handler(AnnotationConflictError, _annotation_conflict)
    app.add_exception_handler(StoreUnavailableError, _store_unavailable)
    app.add_exception_handler(StoreFullError, _store_full)
    # The store raises the two above for its own failures; a database error from anything else is named too.
    app.add_exception_handler(OperationalError, _store_unavailable)
    app.add_exception_handler(InterfaceError, _store_unavailable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
