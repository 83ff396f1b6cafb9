"""Start-up: the bundle is verified, automatic labels are seeded once, failures stop the app."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deepminer.bundle import CONCEPT_LABELS_FILE, META_FILE, BundleError
from service.main import create_app
from service.settings import Settings

AUTO = "auto:test-concepts"


def start(settings: Settings) -> None:
    with TestClient(create_app(settings)):
        pass


@pytest.mark.parametrize("name", ["rankings.json", "fcn.onnx"])
def test_tampered_bundle_stops_start_up(
    bundle_copy: Callable[..., Path], tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = bundle_copy()
    with open(bundle / name, "ab") as fh:
        fh.write(b" ")
    with pytest.raises(BundleError, match=name):
        start(Settings(bundle=bundle, database_url=f"sqlite:///{tmp_path / 'l.db'}"))
    assert any("bundle rejected" in r.getMessage() and name in r.getMessage() for r in caplog.records)


def test_missing_or_extra_files_stop_start_up(bundle_copy: Callable[..., Path], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    with pytest.raises(BundleError, match="not found"):
        start(Settings(bundle=tmp_path / "no-such-bundle", database_url=db))
    bundle = bundle_copy()
    (bundle / "notes.txt").write_text("unexpected")
    with pytest.raises(BundleError, match="notes.txt"):
        start(Settings(bundle=bundle, database_url=db))


def test_a_bundle_with_an_unknown_score_rule_stops_start_up(
    bundle_copy: Callable[..., Path], tmp_path: Path
) -> None:
    def unknown_rule(root: Path) -> None:
        meta = json.loads((root / META_FILE).read_text())
        meta["image_score"] = {"rule": "mean_of_maps"}
        (root / META_FILE).write_text(json.dumps(meta))

    expected = "image_score.rule must be one of breast_peak, classifier, patch_peak, worst_patch, got 'mean_of_maps'"
    with pytest.raises(BundleError, match=expected):
        start(Settings(bundle=bundle_copy(unknown_rule), database_url=f"sqlite:///{tmp_path / 'l.db'}"))


def _with_labels(units: list[int]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        rows = [
            {
                "unit_id": u,
                "label": f"concept {u}",
                "category": "Calcification",
                "cancer_association": "no",
                "recognizable": True,
                "phenomena": "single",
                "description": "automatic",
                "annotator": AUTO,
                "source": "automatic",
            }
            for u in units
        ]
        (root / CONCEPT_LABELS_FILE).write_text(json.dumps(rows))

    return edit


def test_automatic_labels_are_seeded_once(
    bundle_copy: Callable[..., Path], make_client: Callable[..., Any], database_url: str
) -> None:
    bundle = bundle_copy(_with_labels([4, 9]))
    for _ in range(2):  # the second start-up finds the labels and adds nothing
        with make_client(bundle=bundle, database_url=database_url) as client:
            labels = client.get("/units/9").json()["annotations"]
            assert [(a["annotator"], a["source"], a["version"]) for a in labels] == [(AUTO, "automatic", 1)]
            assert len(client.get("/units/4/history").json()["versions"]) == 1


def test_seeding_can_be_switched_off(bundle_copy: Callable[..., Path], make_client: Callable[..., Any]) -> None:
    bundle = bundle_copy(_with_labels([4]))
    with make_client(bundle=bundle, seed_automatic_labels=False) as client:
        assert client.get("/units/4").json()["annotations"] == []


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPMINER_BACKEND", "torch")
    monkeypatch.setenv("DEEPMINER_TOP_K", "8")
    monkeypatch.setenv("DEEPMINER_LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert (settings.backend, settings.top_k, settings.log_level) == ("torch", 8, "debug")
    monkeypatch.setenv("DEEPMINER_TOP_K", "80")
    with pytest.raises(ValueError, match="max_top_k"):
        Settings()
