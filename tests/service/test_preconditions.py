"""If-Match against a unit's ETag (RFC 9110 strong comparison), outside any unit catalogue."""

from __future__ import annotations

import pytest

from service.api.preconditions import etag_matches, if_match_precondition
from service.errors import PreconditionFailedError, PreconditionRequiredError

TAG = '"0123abcd"'


@pytest.mark.parametrize(
    ("if_match", "matches"),
    [(TAG, True), ("*", True), (f'"other", {TAG}', True), (f" {TAG} ", True), ('"other"', False), (f"W/{TAG}", False)],
)
def test_strong_comparison(if_match: str, matches: bool) -> None:
    assert etag_matches(if_match, TAG) is matches


def test_no_header_is_fine_unless_required() -> None:
    assert if_match_precondition(None, unit_id=3, required=False) is None
    with pytest.raises(PreconditionRequiredError, match="GET /units/3"):
        if_match_precondition(None, unit_id=3, required=True)


def test_check_refuses_a_changed_unit_and_names_its_tag() -> None:
    check = if_match_precondition('"stale"', unit_id=3, required=True)
    assert check is not None
    check('"stale"')
    with pytest.raises(PreconditionFailedError, match=f"ETag is now {TAG}") as raised:
        check(TAG)
    assert raised.value.field == "If-Match"
