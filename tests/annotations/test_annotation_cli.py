"""Smoke test of ``python -m annotations`` in a subprocess, on a SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DEEPMINER_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "annotations", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def labels_csv(tmp_path: Path) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(
        "unit_id,label,category,cancer_association,recognizable\n"
        "1814,Edge of a mass with circumscribed margins,Mass,no,true\n"
        "1152,Malignant pleomorphic calcifications,Calcification,yes,\n",
        encoding="utf-8",
    )
    return path


def test_cli_init_import_list_history_export(tmp_path: Path, labels_csv: Path) -> None:
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    common = ("--annotator", "dr_a", "--bundle-hash", "ab" * 32)

    assert run_cli("--db", db, "init", cwd=tmp_path).returncode == 0
    imported = run_cli("--db", db, "import", str(labels_csv), *common, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 annotation(s)" in imported.stdout
    assert run_cli("--db", db, "import", str(labels_csv), *common, cwd=tmp_path).returncode == 0

    listed = run_cli("--db", db, "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == [
        "unit_id",
        "version",
        "annotator",
        "source",
        "category",
        "cancer_association",
        "label",
        "created_at",
    ]
    assert len(listed.stdout.splitlines()) == 3 and "Malignant pleomorphic calcifications" in listed.stdout

    history = run_cli("--db", db, "history", "1814", "--json", cwd=tmp_path)
    assert [row["version"] for row in json.loads(history.stdout)] == [1, 2]

    exported = tmp_path / "out.json"
    assert run_cli("--db", db, "export", str(exported), "--history", cwd=tmp_path).returncode == 0
    assert len(json.loads(exported.read_text(encoding="utf-8"))) == 4


def test_cli_reports_errors_without_a_traceback(tmp_path: Path, labels_csv: Path) -> None:
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    missing = run_cli("--db", db, "list", cwd=tmp_path)
    assert missing.returncode == 1
    assert "init` first" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "labels.db").exists()

    bad = run_cli("--db", db, "import", str(labels_csv), "--annotator", "dr_a", cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: row 1: bundle_hash: missing") and "Traceback" not in bad.stderr


def test_cli_help_lists_the_commands(tmp_path: Path) -> None:
    shown = run_cli("--help", cwd=tmp_path)
    assert shown.returncode == 0
    for command in ("init", "import", "export", "history", "list", "DEEPMINER_DATABASE_URL"):
        assert command in shown.stdout


def test_cli_import_one_based_converts_paper_numbers(tmp_path: Path, labels_csv: Path) -> None:
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    common = ("--annotator", "dr_a", "--bundle-hash", "ab" * 32)
    imported = run_cli("--db", db, "import", str(labels_csv), "--one-based", *common, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "imported 2 annotation(s)" in imported.stdout and "1-based ids, stored 0-based" in imported.stdout
    listed = json.loads(run_cli("--db", db, "list", "--json", cwd=tmp_path).stdout)
    # paper unit 1814 "Edge of a mass with circumscribed margins" is layer4 index 1813
    assert {row["unit_id"]: row["label"] for row in listed} == {
        1813: "Edge of a mass with circumscribed margins",
        1151: "Malignant pleomorphic calcifications",
    }

    zero = tmp_path / "zero.csv"
    zero.write_text("unit_id,label,category\n5,A,Mass\n0,B,Mass\n", encoding="utf-8")
    refused = run_cli("--db", db, "import", str(zero), "--one-based", *common, cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: row 2: unit_id: is 0, but with one_based (--one-based) units are numbered")
    assert len(json.loads(run_cli("--db", db, "list", "--json", cwd=tmp_path).stdout)) == 2  # nothing written
