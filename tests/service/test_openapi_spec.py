"""The checked-in openapi.yaml is what the app serves, and generating it needs no bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service import openapi
from service.main import create_app
from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_openapi_yaml_has_no_drift() -> None:
    checked_in = yaml.safe_load((REPO_ROOT / "openapi.yaml").read_text())
    assert checked_in == openapi.document(), "openapi.yaml is stale: run `python -m service.openapi`"
    assert openapi.main(["--check"]) == 0


def test_check_fails_on_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "openapi.yaml"
    stale.write_text("openapi: 3.1.0\n")
    assert openapi.main(["--check", "--output", str(stale)]) == 1
    assert openapi.main(["--output", str(stale)]) == 0
    assert openapi.main(["--check", "--output", str(stale)]) == 0


def test_document_needs_no_bundle_and_has_stable_operation_ids(tmp_path: Path) -> None:
    app = create_app(Settings(bundle=tmp_path / "absent", database_url="sqlite://"))
    spec = app.openapi()
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    assert set(ids) == {
        "explain-explain",
        "units-list_units",
        "units-get_unit",
        "units-annotate_unit",
        "units-unit_history",
        "units-unit_embedding",
        "units-list_labels",
        "units-annotate_units",
        "units-unit_visualisation",
        "units-unit_patch_image",
        "units-bundle_file",
        "quality-quality_report",
        "queries-query_region",
        "suspicious-list_suspicious_patches",
        "dicomweb-explain_instance",
        "health-healthz",
        "health-readyz",
        "metrics-metrics",
    }
    for path, method, op in operations:
        assert op.get("description") and "\n" not in op["description"], (path, method)
    body = spec["paths"]["/explain"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"]["format"] == "binary"
    assert "ExplainResponse" in spec["components"]["schemas"]
