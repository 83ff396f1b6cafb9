"""Conditional label writes (RFC 9110): the If-Match header against a unit's ETag."""

from __future__ import annotations

from service.errors import PreconditionFailedError, PreconditionRequiredError
from service.units import EtagPrecondition


def etag_matches(if_match: str, etag: str) -> bool:
    """``If-Match`` with the strong comparison of RFC 9110: ``*`` or a listed tag equal to ``etag``.

    Weak tags (``W/"…"``) never match, as the RFC requires for If-Match.
    """
    return any(tag.strip() in ("*", etag) for tag in if_match.split(","))


def if_match_precondition(if_match: str | None, *, unit_id: int, required: bool) -> EtagPrecondition | None:
    """What a write to ``unit_id`` must satisfy given its ``If-Match`` header; None when there is none.

    No header while ``required`` (the require_if_match setting) is a
    :class:`PreconditionRequiredError` (428), before anything is written. With
    one, the returned check raises :class:`PreconditionFailedError` (412) when
    the unit's ETag at the moment of writing is not among the listed tags.
    """
    if if_match is None:
        if required:
            raise PreconditionRequiredError(
                f"send If-Match with the ETag of GET /units/{unit_id}; this service requires it", field="If-Match"
            )
        return None

    def check(current: str) -> None:
        if not etag_matches(if_match, current):
            raise PreconditionFailedError(
                f"unit {unit_id} changed since If-Match {if_match.strip()[:80]} was read (its ETag is now "
                f"{current}); nothing was written: GET /units/{unit_id} and retry",
                field="If-Match",
            )

    return check
