"""Exporting the explanation benchmark (paper §3.2): can an expert tell cancer from benign by the explanation alone?

:func:`export_benchmark` takes the test-split mammograms with a benign or a
malignant finding (the image's own pathology; normal views of such cases carry
no answer), explains each by the labels of its most influential *annotated*
units for the malignant class, and writes two CSV files:

- ``blinded.csv`` for the expert: exactly the columns of :data:`BLINDED_COLUMNS`,
  cases shuffled with a seed and numbered 1..n, the answer column empty;
- ``answer_key.csv``: case number, image, ground truth, descriptors, the
  model's malignant probability and the units behind each explanation.

As in the paper, ``per_class`` draws that many benign and that many malignant
mammograms at random (the paper: 165 and 165); without it every one is taken,
and the classes are as unbalanced as the test split. The explanation of a case
is the paper's: the labels of the ``top`` (3) most influential units among the
malignant class's ranked units that carry a label. Only expert labels made
under the bundle and answered as recognisable count, unless
``include_automatic`` admits automatic ones too.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotations.io import load_annotation_rows
from annotations.records import AnnotationRecord, NewAnnotation
from deepminer.bundle import Bundle, load_bundle
from deepminer.fcn import load_fcn, select_device
from deepminer.formulas import influence, top_units
from deepminer.scoring import classifier_probabilities
from training.benchmark.files import ANSWERS, BLINDED_COLUMNS, BLINDED_FILE, KEY_COLUMNS, KEY_FILE
from training.manifest import ImageRecord, format_descriptors, read_manifest
from training.ranking import fcn_maps
from training.split import split_by_case

log = logging.getLogger(__name__)

EXPLAINED_CLASS = "malignant"
LABEL_SEPARATOR = "; "


def unit_labels(
    annotations: Iterable[NewAnnotation | AnnotationRecord], *, bundle_hash: str, include_automatic: bool = False
) -> dict[int, str]:
    """One label per unit of the bundle ``bundle_hash`` that may explain a case.

    The latest annotation per (unit, annotator) counts (the last one given).
    It names the unit only when it was made under ``bundle_hash`` (unit ids
    mean nothing across models), answered "recognizable" with yes, and made by
    an expert (or, with ``include_automatic``, by an automatic procedure). An
    annotator whose latest answer is "not recognizable" therefore withdraws
    their earlier label. Among a unit's naming annotations, expert labels are
    preferred over automatic ones; among those the most frequent label wins,
    ties going to the first given.
    """
    latest: dict[tuple[int, str], NewAnnotation | AnnotationRecord] = {}
    ignored = 0
    for item in annotations:
        if item.bundle_hash != bundle_hash:
            ignored += 1
            continue
        latest.pop((item.unit_id, item.annotator), None)  # re-insert so order is that of the latest
        latest[(item.unit_id, item.annotator)] = item
    if ignored:
        log.warning("%d annotations belong to other bundles and were ignored", ignored)
    sources = ("expert", "automatic") if include_automatic else ("expert",)
    per_unit: dict[int, list[NewAnnotation | AnnotationRecord]] = {}
    for (unit, _), item in latest.items():
        if item.recognizable is True and item.source in sources and item.label:
            per_unit.setdefault(unit, []).append(item)
    labels = {}
    for unit, items in per_unit.items():
        experts = [a for a in items if a.source == "expert"]
        chosen = experts or items
        labels[unit] = Counter(a.label for a in chosen).most_common(1)[0][0]
    return labels


def most_influential_annotated(
    features: np.ndarray, weight: np.ndarray, class_index: int, annotated: Iterable[int], *, top: int = 3
) -> tuple[list[int], list[float]]:
    """The ``top`` annotated units by influence ``max_xy A_k · w_ck`` on one image, most influential first."""
    scores = influence(features, weight)[class_index]
    candidates = np.asarray(sorted(set(annotated)), dtype=np.int64)
    if candidates.size == 0:
        return [], []
    order = candidates[top_units(scores[candidates], top)]
    return [int(k) for k in order], [float(scores[k]) for k in order]


def ranked_units(bundle: Bundle, class_name: str) -> list[int]:
    """The bundle's ranked units of ``class_name`` (``rankings.json``), best first."""
    try:
        return [int(u["unit_id"]) for u in bundle.rankings["per_class"][class_name]["units"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{bundle.root}/rankings.json lists no ranked units of class {class_name!r} ({exc!r})") from exc


def draw_per_class(images: Sequence[ImageRecord], per_class: int, *, seed: int) -> list[ImageRecord]:
    """``per_class`` benign and ``per_class`` malignant images drawn at random without replacement.

    Seeded by ``seed``; the result keeps the order of ``images``. Raises
    ValueError when a class has fewer images than ``per_class``.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for pathology in ("benign", "malignant"):
        indices = [i for i, r in enumerate(images) if r.pathology == pathology]
        if len(indices) < per_class:
            raise ValueError(
                f"the test split holds {len(indices)} {pathology} mammograms, fewer than the {per_class} per class "
                "asked for; ask for fewer or leave per_class out to take every one"
            )
        chosen += [int(i) for i in rng.choice(indices, size=per_class, replace=False)]
    return [images[i] for i in sorted(chosen)]


def benchmark_images(records: Sequence[ImageRecord], bundle: Bundle) -> list[ImageRecord]:
    """The test-split images with a benign or malignant finding, split as the bundle was.

    Raises ValueError when the manifest does not reproduce the bundle's test
    split (another manifest, or another split rule).
    """
    split = bundle.meta["split"]
    parts = split_by_case(records, seed=int(split["seed"]), fractions=tuple(split["fractions"]))
    expected = split.get("images", {}).get("test")
    if expected is not None and expected != len(parts["test"]):
        raise ValueError(
            f"the manifest gives {len(parts['test'])} test images with split seed {split['seed']}, "
            f"but bundle {bundle.id} was tested on {expected}; use the manifest the bundle was built from"
        )
    chosen = [r for r in parts["test"] if r.pathology in ANSWERS]
    if not chosen:
        raise ValueError("the test split holds no benign or malignant mammograms")
    return chosen


def _findings_text(record: ImageRecord) -> str:
    parts = []
    for f in record.lesions:
        descriptors = format_descriptors(f.descriptors)
        parts.append(f"{f.pathology}: {f.concept} [{f.lexicon}]" + (f" ({descriptors})" if descriptors else ""))
    return " | ".join(parts)


@dataclass(frozen=True)
class ExportResult:
    """Where the benchmark files went and what they hold."""

    blinded: Path
    key: Path
    cases: int
    malignant: int
    benign: int
    annotated_units: int
    available: dict[str, int] = field(default_factory=dict)
    """Benign and malignant test mammograms there were to draw from."""
    explaining_units: int = 0
    """Labelled units among the explained class's ranked units: the ones an explanation can name."""


def export_benchmark(
    bundle_dir: Path,
    manifest: Path,
    out_dir: Path,
    *,
    labels_file: Path | None = None,
    db_url: str | None = None,
    seed: int = 0,
    top: int = 3,
    per_class: int | None = None,
    include_automatic: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> ExportResult:
    """Write ``blinded.csv`` and ``answer_key.csv`` for the bundle's test mammograms to ``out_dir``.

    Unit labels come from ``labels_file`` (CSV or JSON, as ``python -m
    annotations export`` writes; rows without a bundle hash are taken as this
    bundle's) or from the store at ``db_url``; exactly one must be given.
    Which labels count: :func:`unit_labels`. ``per_class``: draw that many
    benign and malignant mammograms with ``seed`` (:func:`draw_per_class`);
    ``None`` takes all. ``seed`` also shuffles the cases.
    """
    if (labels_file is None) == (db_url is None):
        raise ValueError("give exactly one of labels_file and db_url")
    bundle = load_bundle(bundle_dir)
    if labels_file is not None:
        annotations: list[NewAnnotation | AnnotationRecord] = list(
            load_annotation_rows(labels_file, bundle_hash=bundle.hash)
        )
    else:
        from annotations.store import AnnotationStore

        store = AnnotationStore(db_url)  # type: ignore[arg-type]
        try:
            found = store.latest_for_units(unit_ids=range(bundle.num_units))
        finally:
            store.close()
        annotations = [a for unit in sorted(found) for a in found[unit]]
    labels = unit_labels(annotations, bundle_hash=bundle.hash, include_automatic=include_automatic)
    kinds = "expert or automatic" if include_automatic else "expert"
    if not labels:
        raise ValueError(
            f"no unit of bundle {bundle.id} has an {kinds} label answered as recognisable; label units before "
            "exporting the benchmark" + ("" if include_automatic else " (or admit automatic labels)")
        )
    ranked = ranked_units(bundle, EXPLAINED_CLASS)
    explaining = [k for k in ranked if k in labels]
    if not explaining:
        raise ValueError(
            f"none of the {len(ranked)} ranked {EXPLAINED_CLASS} units of bundle {bundle.id} has an {kinds} label "
            f"answered as recognisable ({len(labels)} other units do); explanations are drawn from the ranked units"
        )

    images = benchmark_images(read_manifest(Path(manifest)), bundle)
    available = {p: sum(r.pathology == p for r in images) for p in ANSWERS}
    if per_class is not None:
        images = draw_per_class(images, per_class, seed=seed)
    fcn = load_fcn(bundle)
    weight, _ = bundle.head
    c = bundle.classes.index(EXPLAINED_CLASS)
    rows = []
    maps = fcn_maps(
        fcn, images, short_side=bundle.input_short_side, mean=bundle.mean, std=bundle.std,
        device=select_device(device), desc="benchmark", progress=progress,
    )
    for item in maps:
        units, scores = most_influential_annotated(item.features, weight, c, explaining, top=top)
        probability = classifier_probabilities(item.logits)[c]
        record = item.record
        rows.append(
            {
                "image_id": record.image_id,
                "case_id": record.case_id,
                "pathology": record.pathology,
                "answer": ANSWERS[record.pathology],
                "findings": _findings_text(record),
                "malignant_probability": f"{float(probability):.6f}",
                "explanation": LABEL_SEPARATOR.join(labels[k] for k in units),
                "unit_ids": " ".join(str(k) for k in units),
                "influences": " ".join(f"{v:.6g}" for v in scores),
            }
        )

    order = np.random.default_rng(seed).permutation(len(rows))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blinded, key = out_dir / BLINDED_FILE, out_dir / KEY_FILE
    with blinded.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(BLINDED_COLUMNS)
        for number, i in enumerate(order, start=1):
            writer.writerow([number, rows[i]["explanation"], ""])
    with key.open("w", newline="", encoding="utf-8") as fh:
        key_writer = csv.DictWriter(fh, fieldnames=KEY_COLUMNS)
        key_writer.writeheader()
        for number, i in enumerate(order, start=1):
            key_writer.writerow({"Case #": number, **rows[i]})
    malignant = sum(r["answer"] == "C" for r in rows)
    log.info("benchmark of %d mammograms (%d malignant) written to %s", len(rows), malignant, out_dir)
    return ExportResult(blinded, key, len(rows), malignant, len(rows) - malignant, len(labels), available,
                        len(explaining))
