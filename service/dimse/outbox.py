"""The results of explained instances, one directory per idempotency key, committed by a rename.

The key is the SOP Instance UID and the bundle hash: the same instance
explained by the same model has its results already, so a restart (or the
same instance received again) never explains it twice, while a new bundle
explains it afresh. ``journal.jsonl`` gets one line per committed key; a key
that appears twice there was explained twice.
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
        self.journal = self.dir / JOURNAL
        for part in self.dir.glob(f".*{PART_SUFFIX}"):  # results a crash left half written; explained again
            shutil.rmtree(part)
        journalled = set(self.journalled())
        for key in self.committed():
            if key not in journalled:  # a crash between the commit and its journal line
                append_line(self.journal, json.dumps({"key": key, "recovered": True}))

    def has(self, key: str) -> bool:
        """Whether the results of ``key`` are committed."""
        return (self.dir / key).is_dir()

    def committed(self) -> list[str]:
        """The keys with committed results."""
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
