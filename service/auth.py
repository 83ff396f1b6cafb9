"""Bearer tokens and roles: who may read, and who may label units.

Roles are ordered ``reader < annotator < admin``. ``DEEPMINER_AUTH`` says what
needs a token: ``off`` (nothing; development and the demo), ``writes`` (label
writes need an annotator) or ``all`` (reads need a reader as well). Health,
readiness and metrics never do.

Tokens are never stored: the settings hold each token's sha256 (hex), with the
name recorded as annotator and the role. A presented token is hashed and
compared with every stored hash by :func:`hmac.compare_digest`.

``python -m service.auth hash`` prints the hash of a token read from stdin;
``python -m service.auth generate --name N --role R`` makes a new random token
and prints it with its settings entry.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from annotations import AnnotationValidationError
from annotations.lexicon import MAX_ANNOTATOR_LENGTH
from annotations.validation import check_text
from service.errors import AuthenticationError, PermissionDeniedError

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger(__name__)

AuthMode = Literal["off", "writes", "all"]
Role = Literal["reader", "annotator", "admin"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
"""Weakest first: a role may do everything the roles before it may."""

MIN_TOKEN_LENGTH: Final = 16
"""Shortest token ``python -m service.auth hash`` accepts without ``--allow-short``."""

# Hashes of tokens that are placeholders, not secrets; refused outside development.
_PLACEHOLDER_TOKENS: Final = (
    "", "admin", "annotator", "changeme", "change-me", "changethis", "demo", "example",
    "password", "placeholder", "reader", "secret", "test", "token",
)  # fmt: skip


def hash_token(token: str) -> str:
    """The stored form of a token: ``sha256(token as UTF-8)`` as 64 lower-case hex digits."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


_PLACEHOLDER_HASHES: Final = frozenset(hash_token(t) for t in _PLACEHOLDER_TOKENS) | {"0" * 64}


class AuthConfigError(ValueError):
    """The token configuration cannot be used; start-up stops with this message."""


class TokenSpec(BaseModel):
    """One configured token: who it is, what it may do, and the sha256 of the token itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        max_length=MAX_ANNOTATOR_LENGTH,
        pattern=r"^\S(.*\S)?$",
        description="Recorded as the annotator of every label written with this token.",
    )
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="`python -m service.auth hash` of the token.")

    @field_validator("name")
    @classmethod
    def _storable_name(cls, name: str) -> str:
        """The name as the store records an annotator: NFC, no control characters (the pattern refuses padding)."""
        return check_text(name, field="name", max_length=MAX_ANNOTATOR_LENGTH)


_TOKEN_LIST = TypeAdapter(list[TokenSpec])


@dataclass(frozen=True)
class Principal:
    """Who sent a request with a valid token."""

    name: str
    role: Role

    def may(self, role: Role) -> bool:
        """Whether this principal's role is ``role`` or above it."""
        return ROLES.index(self.role) >= ROLES.index(role)


class Authenticator:
    """Decides, per request, whether the presented token (or none) may read or write."""

    def __init__(self, *, mode: AuthMode, tokens: Sequence[TokenSpec] = ()) -> None:
        if mode not in get_args(AuthMode):
            raise AuthConfigError(f"auth mode must be one of {', '.join(get_args(AuthMode))}; got {mode!r}")
        if mode != "off" and not tokens:
            raise AuthConfigError(f"DEEPMINER_AUTH={mode} needs at least one token (DEEPMINER_TOKENS or _FILE)")
        for what in ("name", "sha256"):
            values = [getattr(t, what) for t in tokens]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                shown = ", ".join(repeated) if what == "name" else f"{len(repeated)} hash(es)"
                raise AuthConfigError(f"token {what}s must be unique; repeated: {shown}")
        self.mode: AuthMode = mode
        self._tokens = tuple(tokens)

    def identify(self, token: str) -> Principal:
        """The principal a token belongs to, or :class:`AuthenticationError` when it matches none."""
        digest = hash_token(token)
        found: TokenSpec | None = None
        for spec in self._tokens:  # no early exit: the time taken does not depend on which one matched
            if hmac.compare_digest(spec.sha256, digest):
                found = spec
        if found is None:
            raise AuthenticationError("the bearer token is not valid", invalid_token=True)
        return Principal(name=found.name, role=found.role)

    def authorize(self, token: str | None, *, write: bool) -> Principal | None:
        """The principal allowed to read (``write=False``) or write labels, or None where no token is needed.

        With auth ``off`` tokens are ignored. Otherwise a presented token must be
        valid even where none is needed; a missing or invalid one where one is
        needed is :class:`AuthenticationError` (401), a valid one whose role is
        too low :class:`PermissionDeniedError` (403).
        """
        if self.mode == "off":
            return None
        principal = None if token is None else self.identify(token)
        needed: Role | None = "annotator" if write else ("reader" if self.mode == "all" else None)
        if needed is None:
            return principal
        if principal is None:
            raise AuthenticationError(f"this request needs a bearer token with the {needed} role")
        if not principal.may(needed):
            raise PermissionDeniedError(
                f"this request needs the {needed} role; the token has the {principal.role} role"
            )
        return principal


def annotator_for(principal: Principal | None, given: str | None, *, field: str = "annotator") -> str:
    """The annotator to record: the token's name when auth is on, else the one the body gives.

    With a token, a body ``annotator`` may be omitted; one that differs from
    the token's name is refused (422 naming ``field``), except for an admin,
    who may record a label on an expert's behalf.
    """
    if principal is None:
        if given is None:
            raise AnnotationValidationError(field, "is required (who labels the unit) when DEEPMINER_AUTH is off")
        return given
    if given is None:
        return principal.name
    if principal.role == "admin":
        return given
    if check_text(given, field=field, max_length=MAX_ANNOTATOR_LENGTH) == principal.name:  # compared as stored
        return given
    raise AnnotationValidationError(field, f"must be the token's name {principal.name!r} or be left out; got {given!r}")


def load_tokens(path: Path) -> list[TokenSpec]:
    """The token list in a JSON file (``[{"name", "role", "sha256"}, …]``); :class:`AuthConfigError` says what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthConfigError(f"DEEPMINER_TOKENS_FILE {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return _TOKEN_LIST.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise AuthConfigError(
            f"DEEPMINER_TOKENS_FILE {path} must hold a JSON list of {{name, role, sha256}}: at {where}: {first['msg']}"
        ) from None


def load_authenticator(settings: Settings) -> Authenticator:
    """The authenticator the settings describe; :class:`AuthConfigError` stops start-up with the reason.

    Outside development, placeholder tokens (``changeme``, ``secret``, the
    empty string…) are refused; in development they are only logged.
    """
    tokens = list(settings.tokens or ())
    if settings.tokens_file is not None:
        tokens = load_tokens(settings.tokens_file)
    authenticator = Authenticator(mode=settings.auth, tokens=tokens)
    weak = [t.name for t in tokens if t.sha256 in _PLACEHOLDER_HASHES]
    if weak and settings.environment != "development":
        raise AuthConfigError(
            f"placeholder tokens are refused outside development; replace the tokens of {', '.join(weak)} "
            "(python -m service.auth generate)"
        )
    if weak and settings.auth != "off":
        log.warning("placeholder tokens configured", extra={"fields": {"event": "weak_tokens", "count": len(weak)}})
    log.info("auth configured", extra={"fields": {"event": "auth", "mode": settings.auth, "tokens": len(tokens)}})
    return authenticator


# -- command line -----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.auth", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    hash_cmd = commands.add_parser("hash", help="print the sha256 of a token read from stdin")
    hash_cmd.add_argument(
        "--allow-short", action="store_true", help=f"accept tokens under {MIN_TOKEN_LENGTH} characters"
    )
    gen = commands.add_parser("generate", help="make a random token and print it with its DEEPMINER_TOKENS entry")
    gen.add_argument("--name", required=True, help="who the token is for; recorded as the annotator")
    gen.add_argument("--role", required=True, choices=ROLES)
    args = parser.parse_args(argv)

    if args.command == "hash":
        token = sys.stdin.read().strip()
        if not token:
            print("no token on stdin", file=sys.stderr)
            return 2
        if len(token) < MIN_TOKEN_LENGTH and not args.allow_short:
            print(
                f"the token has {len(token)} characters, fewer than {MIN_TOKEN_LENGTH}; use `generate`, "
                "or --allow-short for a development token",
                file=sys.stderr,
            )
            return 2
        print(hash_token(token))
        return 0
    try:
        spec = TokenSpec(name=args.name, role=args.role, sha256="0" * 64)
    except ValidationError as exc:
        print(f"invalid --name: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(32)
    print(f"token: {token}")
    print(f"entry: {json.dumps({**spec.model_dump(), 'sha256': hash_token(token)})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
