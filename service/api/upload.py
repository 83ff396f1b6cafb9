"""Reading the uploaded image from a multipart request without ever holding more than the limit.

Starlette's form parser has no size limit for files, so the request body is
counted as it arrives and the transfer is cut off once it cannot fit anymore.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Message

from service.errors import InvalidParameterError, UnsupportedMediaTypeError, UploadTooLargeError

FIELD = "file"
# Room for the multipart boundaries and part headers around the file itself.
FRAMING_BYTES = 64 * 1024


def _too_large(limit: int) -> UploadTooLargeError:
    return UploadTooLargeError(f"the upload exceeds the limit of {limit} bytes (max_upload_bytes)", field=FIELD)


@dataclass(frozen=True)
class UploadedForm:
    """The parts of a multipart body: file fields as bytes, text fields as strings (absent ones left out)."""

    files: dict[str, bytes]
    fields: dict[str, str]


async def read_upload(request: Request, *, max_bytes: int) -> bytes:
    """The bytes of the multipart field ``file``, at most ``max_bytes`` of them.

    Raises :class:`UnsupportedMediaTypeError` for a body that is not
    multipart/form-data, :class:`UploadTooLargeError` once the file (or the
    body around it) exceeds the limit, and :class:`InvalidParameterError`
    naming ``file`` when the field is missing or is not a file.
    """
    return (await read_form(request, max_bytes=max_bytes)).files[FIELD]


async def read_form(
    request: Request, *, max_bytes: int, optional_files: tuple[str, ...] = (), fields: tuple[str, ...] = ()
) -> UploadedForm:
    """The image in ``file`` plus the optional file fields ``optional_files`` and text ``fields``.

    The whole body, every file together, is held to ``max_bytes`` (plus room
    for the multipart framing). Errors as :func:`read_upload`; a text field
    sent as a file, or a file field sent as text, is :class:`InvalidParameterError`
    naming it.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError(
            f"send the image as multipart/form-data in the field {FIELD!r}; got content-type {content_type or 'none'!r}",
            field=FIELD,
        )
    body_limit = max_bytes + FRAMING_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise _too_large(max_bytes)

    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > body_limit:
                raise _too_large(max_bytes)
        return message

    limited = Request(request.scope, limited_receive)
    parser = MultiPartParser(
        limited.headers, limited.stream(), max_files=1 + len(optional_files), max_fields=8 + len(fields)
    )
    # The body is already held to body_limit, so keep the file in memory: Starlette's default spools
    # anything over 1 MiB to a temporary file, a disk round trip for every mammogram (BENCHMARKS.md).
    parser.spool_max_size = body_limit
    try:
        form = await parser.parse()
    except MultiPartException as exc:  # what Request.form() would raise: 400 with the parser's message
        raise HTTPException(status_code=400, detail=exc.message) from None
    try:
        files: dict[str, bytes] = {}
        size = 0
        for name in (FIELD, *optional_files):
            upload = form.get(name)
            if upload is None and name != FIELD:
                continue
            if not isinstance(upload, UploadFile):
                what = "the image" if name == FIELD else "it"
                raise InvalidParameterError(
                    f"the multipart body must hold {what} as a file in the field {name!r}", field=name
                )
            # One read of the whole (in-memory) file: reading it in pieces and joining them copied a
            # mammogram once more (parsing a 13.8 MB body took 36-40 ms that way, 30-33 ms now).
            data = await upload.read()
            size += len(data)
            if size > max_bytes:
                raise _too_large(max_bytes)
            files[name] = data
        texts: dict[str, str] = {}
        for name in fields:
            value = form.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidParameterError(f"the multipart field {name!r} must be text, not a file", field=name)
            texts[name] = value
        return UploadedForm(files=files, fields=texts)
    finally:
        await form.close()
