"""``multipart/related`` bodies, as WADO-RS sends instances and STOW-RS receives them (PS3.18 8.6.1.2)."""

from __future__ import annotations

import secrets
from email.message import Message


class MultipartError(ValueError):
    """A body that does not follow the multipart syntax its Content-Type announces."""


def boundary_of(content_type: str) -> str | None:
    """The ``boundary`` parameter of a Content-Type header, unquoted; None when absent."""
    message = Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    return boundary if isinstance(boundary, str) and boundary else None


def split(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of ``body``: each part's headers (lower-case names) and its bytes.

    A delimiter is CRLF ``--boundary`` (RFC 2046 5.1.1), the first one possibly
    at the very start; the CRLF before a delimiter belongs to the delimiter.
    """
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    if len(chunks) < 2:
        raise MultipartError("the multipart body holds no boundary delimiter")
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # the close delimiter
            break
        _padding, newline, chunk = chunk.partition(b"\r\n")
        if chunk.startswith(b"\r\n"):  # a part without headers
            head, separator, content = b"", b"\r\n", chunk[2:]
        else:
            head, separator, content = chunk.partition(b"\r\n\r\n")
        if not newline or not separator:
            raise MultipartError("a multipart part has no blank line after its headers")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts


def join(parts: list[bytes], *, media_type: str) -> tuple[bytes, str]:
    """A ``multipart/related`` body of ``parts``, each of ``media_type``, and the Content-Type that announces it."""
    boundary = f"deepminer-{secrets.token_hex(16)}"
    chunks = []
    for part in parts:
        chunks += [f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode("latin-1"), part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(chunks), f'multipart/related; type="{media_type}"; boundary={boundary}'
