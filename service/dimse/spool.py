"""The spool of received instances: each written durably before its C-STORE is acknowledged, within a size limit.

``incoming/`` holds instances waiting to be explained, one Part 10 file per SOP
Instance UID; ``failed/`` those that can never be explained, each with a
``.json`` that says why. The size limit counts ``incoming/`` only: it bounds
the work the listener has accepted and not yet done.
"""

from __future__ import annotations

import errno
import json
import os
import re
import threading
from pathlib import Path

from service.dimse.durable import PART_SUFFIX, fsync_dir, write_file

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UID_MAX = 64
_SUFFIX = ".dcm"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class SpoolFullError(Exception):
    """The instance does not fit: the spool is at its size limit or the disk is full (C-STORE status A700)."""


class InvalidUidError(ValueError):
    """The SOP Instance UID cannot name a file: not digits and dots, or longer than 64 characters."""


def check_uid(uid: str) -> str:
    """``uid`` when it is a valid DICOM UID (digits and dots, at most 64 characters); :class:`InvalidUidError` else."""
    if len(uid) > _UID_MAX or not _UID.match(uid):
        raise InvalidUidError(f"the SOP Instance UID is not digits and dots of at most {_UID_MAX} characters")
    return uid


class Spool:
    """Received instances on disk. Thread-safe: the SCP's association threads put, the worker takes."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.incoming = root / "incoming"
        self.failed = root / "failed"
        self.max_bytes = max_bytes
        for directory in (self.incoming, self.failed):
            directory.mkdir(parents=True, exist_ok=True)
            for part in directory.glob(f".*{PART_SUFFIX}"):  # a crash mid-write; never acknowledged
                part.unlink()
        self._lock = threading.Lock()
        self._bytes = sum(path.stat().st_size for path in self.pending())

    @property
    def bytes(self) -> int:
        """Total size of the instances waiting to be explained."""
        return self._bytes

    def depth(self) -> int:
        """Instances waiting to be explained."""
        return sum(1 for _ in self.incoming.glob(f"*{_SUFFIX}"))

    def put(self, sop_uid: str, data: bytes) -> Path:
        """Store the instance durably; when this returns, it survives a crash.

        Raises :class:`SpoolFullError` when it would take the spool past ``max_bytes`` or the disk has no
        room, :class:`InvalidUidError` for a UID that cannot name a file, ``OSError`` for other disk faults.
        """
        path = self.incoming / f"{check_uid(sop_uid)}{_SUFFIX}"
        with self._lock:  # reserve the room first, so concurrent associations cannot overshoot together
            replaced = path.stat().st_size if path.exists() else 0
            if self._bytes - replaced + len(data) > self.max_bytes:
                raise SpoolFullError(
                    f"the spool holds {self._bytes} bytes; {len(data)} more exceed its limit of {self.max_bytes}"
                )
            self._bytes += len(data) - replaced
        try:
            write_file(path, data)
        except OSError as exc:
            with self._lock:
                self._bytes -= len(data) - replaced
            if exc.errno in _NO_SPACE:
                raise SpoolFullError(f"no room on the spool's disk: {os.strerror(exc.errno)}") from exc
            raise
        return path

    def pending(self) -> list[Path]:
        """The waiting instances, oldest first."""
        entries = []
        for path in self.incoming.glob(f"*{_SUFFIX}"):
            try:
                entries.append((path.stat().st_mtime_ns, path))
            except FileNotFoundError:  # taken meanwhile
                continue
        return [path for _, path in sorted(entries)]

    @staticmethod
    def sop_uid(path: Path) -> str:
        """The SOP Instance UID a spooled file is stored under."""
        return path.name.removesuffix(_SUFFIX)

    def remove(self, path: Path) -> None:
        """Drop an instance whose results are committed (durably: a restart does not find it again)."""
        size = path.stat().st_size
        path.unlink()
        fsync_dir(self.incoming)
        with self._lock:
            self._bytes -= size

    def fail(self, path: Path, *, code: str, reason: str) -> None:
        """Move an instance that can never be explained to ``failed/``, with ``code`` and ``reason`` beside it."""
        size = path.stat().st_size
        write_file(self.failed / f"{path.stem}.json", json.dumps({"code": code, "reason": reason}).encode())
        os.replace(path, self.failed / path.name)
        fsync_dir(self.failed)
        fsync_dir(self.incoming)
        with self._lock:
            self._bytes -= size
