"""Structured JSON logs, one object per line, tagged with the request id.

Nothing that could identify a patient is logged: no file names, no query
strings, no image metadata; requests are logged by route template.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

request_id: ContextVar[str | None] = ContextVar("deepminer_request_id", default=None)
"""The id of the request being served in this context (None outside requests)."""

_LOGGERS = ("service", "uvicorn", "uvicorn.error")
_HANDLER_MARK = "_deepminer_json"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...fields}``; ``extra={"fields": {...}}`` adds keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info") -> None:
    """Send the service's and uvicorn's logs to stderr as JSON lines at ``level``; safe to call again."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if not any(getattr(h, _HANDLER_MARK, False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(JsonFormatter())
            setattr(handler, _HANDLER_MARK, True)
            logger.addHandler(handler)
        # A handler further up (uvicorn's, a root basicConfig) would print the line a second time.
        logger.propagate = False
