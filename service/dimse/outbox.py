"""The results of explained instances, one directory per idempotency key, committed by a rename.

The key is the SOP Instance UID and the bundle hash: the same instance
explained by the same model has its results already, so a restart (or the
same instance received again) never explains it twice, while a new bundle
explains it afresh. ``journal.jsonl`` gets one line per committed key; a key
that appears twice there was explained twice.

When a destination is configured (:mod:`service.dimse.sender`), each result
file is removed once the destination acknowledged it; a key whose results are
all delivered leaves an empty marker in ``delivered/``, one that failed for
good moves to ``dead-letter/`` with ``reason.json``. Both still count as
explained.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from service.dimse.durable import PART_SUFFIX, append_line, fsync_dir, write_file
from service.pacs.results import DicomResult

JOURNAL = "journal.jsonl"


def result_key(sop_uid: str, bundle_hash: str) -> str:
    """The idempotency key of one instance's results under one model bundle."""
    return f"{sop_uid}_{bundle_hash}"


class Outbox:
    """``outbox/<key>/<kind>.dcm`` for every explained instance, and the journal of commits."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "outbox"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.delivered = root / "delivered"
        self.dead_letter = root / "dead-letter"
        for directory in (self.delivered, self.dead_letter):
            directory.mkdir(exist_ok=True)
        self.journal = self.dir / JOURNAL
        for part in self.dir.glob(f".*{PART_SUFFIX}"):  # results a crash left half written; explained again
            shutil.rmtree(part)
        journalled = set(self.journalled())
        for key in self.committed():
            if key not in journalled:  # a crash between the commit and its journal line
                append_line(self.journal, json.dumps({"key": key, "recovered": True}))

    def has(self, key: str) -> bool:
        """Whether the results of ``key`` are committed (waiting, delivered or dead-lettered)."""
        return (self.dir / key).is_dir() or (self.delivered / key).exists() or (self.dead_letter / key).exists()

    def committed(self) -> list[str]:
        """The keys with committed results not yet delivered nor dead-lettered."""
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def journalled(self) -> list[str]:
        """The keys of the journal, one per commit, in commit order."""
        if not self.journal.exists():
            return []
        lines = self.journal.read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["key"] for line in lines if line.strip()]

    def commit(self, key: str, results: Sequence[DicomResult]) -> Path:
        """Write ``results`` under ``key`` durably; the rename of the finished directory is the commit."""
        final = self.dir / key
        if final.exists():
            raise FileExistsError(f"results of {key} are committed already")
        part = self.dir / f".{key}{PART_SUFFIX}"
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir()
        for result in results:
            write_file(part / f"{result.kind}.dcm", result.data)
        part.rename(final)
        fsync_dir(self.dir)
        append_line(self.journal, json.dumps({"key": key}))
        return final

    def files(self, key: str) -> list[Path]:
        """The result files of ``key`` that the destination has not acknowledged yet."""
        return sorted((self.dir / key).glob("*.dcm"))

    def acknowledged(self, path: Path) -> None:
        """The destination acknowledged this result file: drop it durably."""
        path.unlink()
        fsync_dir(path.parent)

    def mark_delivered(self, key: str) -> None:
        """Every result of ``key`` is acknowledged: the marker first, then the emptied directory goes."""
        write_file(self.delivered / key, b"")
        shutil.rmtree(self.dir / key)
        fsync_dir(self.dir)

    def move_to_dead_letter(self, key: str, *, status: str, reason: str) -> None:
        """The results of ``key`` failed for good: kept in ``dead-letter/<key>/`` with the status and the reason."""
        write_file(self.dir / key / "reason.json", json.dumps({"status": status, "reason": reason}).encode())
        (self.dir / key).rename(self.dead_letter / key)
        fsync_dir(self.dead_letter)
        fsync_dir(self.dir)
