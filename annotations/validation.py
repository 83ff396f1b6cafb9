"""Checks that turn caller-supplied values into stored values, or say what is wrong.

Every check raises :class:`AnnotationValidationError` naming the field and
quoting the value it got.
"""

from __future__ import annotations

import re
import unicodedata

from annotations.errors import AnnotationValidationError
from annotations.lexicon import MAX_UNIT_ID

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# C0 control characters but tab and newline, and lone UTF-16 surrogates (no UTF-8 form, so no
# database can store them). PostgreSQL refuses NUL outright; SQLite would keep it.
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b-\x1f\ud800-\udfff]")


def check_unit_id(value: object, *, field: str = "unit_id") -> int:
    """A 0-based layer4 unit index: a plain int (not a bool, not a string), 0 <= id < 2**31."""
    # Strings are refused on purpose: the reference lost labels by formatting ids two ways.
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnnotationValidationError(field, f"must be an integer, got {value!r} ({type(value).__name__})")
    if not 0 <= value <= MAX_UNIT_ID:
        raise AnnotationValidationError(field, f"must be a 0-based unit index in [0, {MAX_UNIT_ID}], got {value}")
    return int(value)


def normalise_text(value: str) -> str:
    """``value`` in Unicode NFC, with each CR LF line break written as LF.

    NFC makes equal-looking text equal: "é" typed as one character or as "e"
    and a combining accent is stored, compared and counted alike.
    """
    return unicodedata.normalize("NFC", value.replace("\r\n", "\n"))


def check_text(value: object, *, field: str, max_length: int, allow_empty: bool = False) -> str:
    """A string as stored: :func:`normalise_text`, surrounding whitespace stripped, at most ``max_length`` characters.

    Control characters other than tab and newline (NUL, a lone CR, escape…)
    and lone surrogates are refused, wherever they stand: nothing is dropped
    silently. Length counts characters (code points) of the normalised text.
    """
    if not isinstance(value, str):
        raise AnnotationValidationError(field, f"must be a string, got {value!r} ({type(value).__name__})")
    text = normalise_text(value)
    bad = _UNSTORABLE.search(text)
    if bad is not None:
        where = f"U+{ord(bad.group()):04X} at character {bad.start() + 1}"
        reason = (
            "of the control characters only tab and newline are allowed"
            if bad.group() < " "
            else "a lone surrogate has no UTF-8 form"
        )
        raise AnnotationValidationError(field, f"must not contain {where}: {reason}")
    text = text.strip()
    if not text and not allow_empty:
        raise AnnotationValidationError(field, f"must not be empty, got {value!r}")
    if len(text) > max_length:
        raise AnnotationValidationError(field, f"must be at most {max_length} characters, got {len(text)}")
    return text


def check_choice(value: object, *, field: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``, matched case-insensitively and returned in its canonical spelling."""
    if isinstance(value, str):
        wanted = value.strip().casefold()
        for choice in choices:
            if choice.casefold() == wanted:
                return choice
    allowed = ", ".join(repr(c) for c in choices)
    raise AnnotationValidationError(field, f"must be one of {allowed}; got {value!r}")


def check_optional_choice(value: object, *, field: str, choices: tuple[str, ...]) -> str | None:
    """``None`` (unanswered) or one of ``choices``, as :func:`check_choice`."""
    return None if value is None else check_choice(value, field=field, choices=choices)


def check_optional_bool(value: object, *, field: str) -> bool | None:
    """``True``, ``False`` or ``None`` (unanswered); nothing else, not even 0 or 1."""
    if value is None or isinstance(value, bool):
        return value
    raise AnnotationValidationError(field, f"must be true, false or null, got {value!r}")


def check_sha256(value: object, *, field: str = "bundle_hash") -> str:
    """A sha256 digest as 64 hex digits, returned lower-case."""
    digest = value.strip().lower() if isinstance(value, str) else value
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        raise AnnotationValidationError(field, f"must be a sha256 hex digest (64 hex digits), got {value!r}")
    return digest
