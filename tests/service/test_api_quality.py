"""GET /quality: the bundle's explanation-quality report as the build wrote it, and its figure through /bundle-files."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from deepminer.bundle import META_FILE, BundleError, load_bundle
from service.main import create_app
from service.quality import QUALITY_DIR, QUALITY_FIGURE, QUALITY_JSON
from service.settings import Settings

# What GET /quality adds to the report's own figures.
SERVED_ONLY = {"model_id", "bundle_hash", "report", "figure_url", "per_image"}


def assert_error(response: Any, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field


def stored(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / QUALITY_JSON).read_text())  # type: ignore[no-any-return]


def edit_meta(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads((root / META_FILE).read_text())
    change(meta)
    (root / META_FILE).write_text(json.dumps(meta))


def test_the_tiny_bundle_carries_a_report(tiny_bundle: Path) -> None:
    # The build scores its test split whenever that split has lesion masks; the phantoms' does.
    meta = load_bundle(tiny_bundle).meta
    assert meta["metrics"]["explanation_quality"]["report"] == QUALITY_JSON
    assert QUALITY_JSON in meta["files"] and QUALITY_FIGURE in meta["files"]


def test_figures_are_the_bundles_report_without_per_image(client: TestClient, tiny_bundle: Path) -> None:
    report = stored(tiny_bundle)
    report.pop("per_image")
    bundle = load_bundle(tiny_bundle)
    response = client.get("/quality")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["per_image"] is None
    assert {k: v for k, v in body.items() if k not in SERVED_ONLY} == report
    assert (body["model_id"], body["bundle_hash"], body["report"]) == (bundle.id, bundle.hash, QUALITY_JSON)
    assert body["pointing_game"]["tolerance_image_px"] == report["pointing_game"]["tolerance_image_px"]
    assert set(body["bars"]) == set(report["bars"]) and all("pass" in bar for bar in body["bars"].values())


def test_per_image_rows_come_only_when_asked(client: TestClient, tiny_bundle: Path) -> None:
    rows = stored(tiny_bundle)["per_image"]
    assert len(rows) == stored(tiny_bundle)["images"] > 0
    assert client.get("/quality", params={"per_image": "true"}).json()["per_image"] == rows
    assert client.get("/quality", params={"per_image": "false"}).json()["per_image"] is None
    assert_error(client.get("/quality", params={"per_image": "maybe"}), 422, "validation_error", "per_image")


def test_the_figure_url_serves_the_worst_case_png(client: TestClient, tiny_bundle: Path) -> None:
    url = client.get("/quality").json()["figure_url"]
    assert urlsplit(url).path == f"/bundle-files/{QUALITY_FIGURE}"
    png = client.get(urlsplit(url).path)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == (tiny_bundle / QUALITY_FIGURE).read_bytes() and png.content.startswith(b"\x89PNG")
    assert png.headers["etag"] == f'"{hashlib.sha256(png.content).hexdigest()}"'


@pytest.mark.parametrize(
    "path",
    [
        QUALITY_JSON,  # listed, under quality/, but not a PNG
        f"{QUALITY_DIR}/quality.md",
        f"{QUALITY_DIR}/nope.png",
        f"{QUALITY_DIR}/../meta.json",
        f"{QUALITY_DIR}/%2e%2e/rankings.json",
        f"{QUALITY_DIR}/..%2fplots%2froc.png",
        f"{QUALITY_DIR}//worst_cases.png",
        f"{QUALITY_DIR}/%2e/worst_cases.png",
        f"{QUALITY_DIR}%5cworst_cases.png",
        "QUALITY/worst_cases.png",
    ],
)
def test_bundle_files_serves_no_other_quality_file(client: TestClient, path: str) -> None:
    response = client.get(f"/bundle-files/{path}")
    assert response.status_code == 404, (path, response.status_code)
    assert response.json()["error"]["code"] in ("not_in_bundle", "not_found")


def test_only_pngs_directly_under_quality_are_served(
    make_client: Callable[..., Any], bundle_copy: Callable[..., Path]
) -> None:
    def add_pngs(root: Path) -> None:
        figure = (root / QUALITY_FIGURE).read_bytes()
        (root / QUALITY_DIR / "per_concept.png").write_bytes(figure)
        (root / QUALITY_DIR / "old").mkdir()
        (root / QUALITY_DIR / "old" / "worst_cases.png").write_bytes(figure)

    with make_client(bundle=bundle_copy(add_pngs)) as client:
        assert client.get(f"/bundle-files/{QUALITY_DIR}/per_concept.png").status_code == 200
        assert_error(client.get(f"/bundle-files/{QUALITY_DIR}/old/worst_cases.png"), 404, "not_in_bundle", "path")


def test_a_bundle_without_a_report_answers_404_with_the_way_to_make_one(
    make_client: Callable[..., Any], bundle_copy: Callable[..., Path]
) -> None:
    # What an older bundle, or one built with quality_report=False, holds: no quality/ and a null entry.
    def strip(root: Path) -> None:
        shutil.rmtree(root / QUALITY_DIR)
        edit_meta(root, lambda meta: meta["metrics"].update(explanation_quality=None))

    with make_client(bundle=bundle_copy(strip)) as client:
        response = client.get("/quality")
        assert_error(response, 404, "no_quality_report", None)
        assert "python -m training quality --bundle DIR --manifest CSV" in response.json()["error"]["message"]
        assert_error(client.get("/quality", params={"per_image": "true"}), 404, "no_quality_report", None)
        assert_error(client.get(f"/bundle-files/{QUALITY_FIGURE}"), 404, "not_in_bundle", "path")
        assert client.get("/units").status_code == 200  # everything else works as before


def test_a_report_without_misses_has_no_figure(
    make_client: Callable[..., Any], bundle_copy: Callable[..., Path]
) -> None:
    with make_client(bundle=bundle_copy(lambda root: (root / QUALITY_FIGURE).unlink())) as client:
        response = client.get("/quality")
        assert response.status_code == 200 and response.json()["figure_url"] is None


def test_undefined_figures_are_served_as_null(
    make_client: Callable[..., Any], bundle_copy: Callable[..., Path]
) -> None:
    # JSON has no NaN; a report holding one (an undefined figure) must still be answered, as null.
    def undefined(root: Path) -> None:
        text = (root / QUALITY_JSON).read_text()
        report = json.loads(text)
        report["background"]["max_probability"]["benign"] = float("nan")
        (root / QUALITY_JSON).write_text(json.dumps(report))

    with make_client(bundle=bundle_copy(undefined)) as client:
        response = client.get("/quality")
        assert response.status_code == 200, response.text
        assert response.json()["background"]["max_probability"]["benign"] is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [("[]", "must be a JSON object, got list"), ('{"images": 3}', "lacks lesion_images"), ("{", "not a readable JSON")],
)
def test_a_broken_report_stops_start_up(
    bundle_copy: Callable[..., Path], tmp_path: Path, content: str, expected: str
) -> None:
    bundle = bundle_copy(lambda root: (root / QUALITY_JSON).write_text(content))
    with pytest.raises(BundleError, match=expected):
        with TestClient(create_app(Settings(bundle=bundle, database_url=f"sqlite:///{tmp_path / 'l.db'}"))):
            pass


def test_a_report_the_meta_names_but_the_bundle_lacks_stops_start_up(
    bundle_copy: Callable[..., Path], tmp_path: Path
) -> None:
    def dangling(root: Path) -> None:
        shutil.rmtree(root / QUALITY_DIR)

    settings = Settings(bundle=bundle_copy(dangling), database_url=f"sqlite:///{tmp_path / 'l.db'}")
    with pytest.raises(BundleError, match="metrics.explanation_quality.report names 'quality/quality.json'"):
        with TestClient(create_app(settings)):
            pass
