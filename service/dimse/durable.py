"""Writes that survive a crash: the data fsynced, renamed into place, and the directory fsynced.

A file written this way either exists whole under its final name after a
power loss or a SIGKILL, or not at all; the rename is the commit point.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

PART_SUFFIX = ".part"
"""Suffix of a file or directory still being written; what a crash leaves with it is removed on start-up."""


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename, a new or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: a temporary sibling, fsynced, renamed over ``path``, the directory fsynced.

    On any ``OSError`` (a full disk raises ENOSPC) the temporary file is removed and ``path`` is left as it was.
    """
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex}{PART_SUFFIX}")
    try:
        with part.open("xb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` and fsync it (a journal)."""
    with path.open("a", encoding="utf-8") as fp:
        fp.write(line + "\n")
        fp.flush()
        os.fsync(fp.fileno())
