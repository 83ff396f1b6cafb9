"""Domain errors of the unit-label store, for the HTTP layer to map to status codes."""

from __future__ import annotations


class AnnotationError(Exception):
    """Base class of every error the annotation store raises on purpose."""


class AnnotationValidationError(AnnotationError, ValueError):
    """A value given for an annotation is not acceptable (maps to HTTP 422).

    ``field`` names the offending field, ``row`` the 1-based record of an
    imported file when the value came from one (header not counted).
    """

    def __init__(self, field: str, message: str, *, row: int | None = None) -> None:
        self.field = field
        self.message = message
        self.row = row
        where = f"row {row}: " if row is not None else ""
        super().__init__(f"{where}{field}: {message}")

    def at_row(self, row: int) -> AnnotationValidationError:
        """The same error, located at ``row`` of an imported file."""
        return AnnotationValidationError(self.field, self.message, row=row)


class AnnotationConflictError(AnnotationError):
    """Concurrent writers kept taking the same version number; nothing was written (maps to HTTP 503)."""


class StoreUnavailableError(AnnotationError):
    """The database cannot be reached: refused, lost or timed-out connections (maps to HTTP 503; readiness fails).

    A write that fails so was not acknowledged; it may still have been committed
    when the connection broke after the database received the commit.
    """


class StoreFullError(AnnotationError):
    """The database has no disk space for a write; nothing was written (maps to HTTP 507). Reads still work."""
