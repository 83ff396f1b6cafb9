"""``python -m training quality``: the report of a built bundle on a manifest with lesion masks."""

from __future__ import annotations

import json
from pathlib import Path

from training.quality.figures import DEMO_BARS, QUALITY_DIR, QualityReport, assess, labels_by_unit
from training.quality.report import write_report
from training.ranking import fcn_maps


def bundle_quality(
    bundle_dir: Path,
    manifest: Path,
    out_dir: Path | None = None,
    *,
    part: str | None = None,
    labels_file: Path | None = None,
    device: str = "auto",
    bars: bool = False,
    progress: bool = True,
    score_rule: str | None = None,
) -> tuple[QualityReport, list[Path]]:
    """``python -m training quality``: the report of a built bundle on ``manifest``.

    ``part``: ``test`` (the bundle's test split; the default when ``manifest`` is
    the one the bundle was built from), or ``all`` (every image; the default for
    any other manifest). ``labels_file``: unit labels as written by ``python -m
    annotations export`` (CSV or JSON), only those made under this bundle;
    default: the bundle's automatic labels. ``score_rule``: score images under
    this rule (:data:`deepminer.scoring.SCORE_RULES`) instead of the bundle's, to
    compare rules on one model. Writes to ``out_dir`` (default: a
    ``quality`` folder next to the manifest; the bundle itself is never written to).
    """
    from annotations.io import load_annotation_rows
    from deepminer.bundle import CONCEPT_LABELS_FILE, load_bundle
    from deepminer.fcn import select_device
    from training.benchmark import load_fcn
    from training.manifest import read_manifest
    from training.split import split_by_case

    bundle = load_bundle(bundle_dir)
    manifest = Path(manifest).resolve()
    records = read_manifest(manifest)
    own = str(manifest) == str(bundle.meta.get("data", {}).get("manifest"))
    part = part or ("test" if own else "all")
    if part not in ("test", "all"):
        raise ValueError(f"part must be 'test' or 'all', got {part!r}")
    if part == "test":
        split = bundle.meta["split"]
        records = split_by_case(records, seed=int(split["seed"]), fractions=tuple(split["fractions"]))["test"]
    if not any(r.lesions for r in records):
        raise ValueError(f"{manifest} ({part}) holds no image with a lesion mask: nothing to point at")
    if labels_file is not None:
        rows = [vars(a) for a in load_annotation_rows(labels_file, bundle_hash=bundle.hash) if a.bundle_hash == bundle.hash]
        label_source = str(labels_file)
    elif bundle.has(CONCEPT_LABELS_FILE):
        rows = json.loads(bundle.path(CONCEPT_LABELS_FILE).read_text())
        label_source = f"{CONCEPT_LABELS_FILE} (automatic)"
    else:
        rows, label_source = [], "none"
    weight, _ = bundle.head
    maps = fcn_maps(load_fcn(bundle), records, short_side=bundle.input_short_side, mean=bundle.mean, std=bundle.std,
                    device=select_device(device), desc="explanation quality", progress=progress)
    report = assess(
        maps, weight=weight, classes=bundle.classes, labels=labels_by_unit(rows), rankings=bundle.rankings,
        score_rule=score_rule or bundle.score_rule, patch_cells=bundle.patch_cells,
        dataset={"manifest": str(manifest), "part": part, "labels": label_source, "bundle": bundle.id},
        bars=DEMO_BARS if bars else None,
    )
    out_dir = Path(out_dir) if out_dir else manifest.parent / QUALITY_DIR
    return report, write_report(report, out_dir, title=bundle.id)
