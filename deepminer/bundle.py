"""The model bundle: one self-describing, hashed directory (DESIGN.md "How the parts meet").

``training`` writes it with :func:`finalise_bundle`; ``service`` reads it with
:func:`load_bundle`, which refuses a bundle whose files are missing, unknown or
do not match the sha256 recorded in ``meta.json``. The bundle's hash is the
sha256 of ``meta.json`` itself, which lists every other file's hash, so it
identifies the whole directory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from deepminer.auxiliary import AuxFeature
from deepminer.grid import patch_cells
from deepminer.scoring import DEFAULT_SCORE_RULE, SCORE_RULES

SCHEMA_VERSION = 1
META_FILE = "meta.json"
WEIGHTS_FILE = "weights.pt"
ONNX_FILE = "fcn.onnx"
HEAD_FILE = "head.npz"
RANKINGS_FILE = "rankings.json"
CONCEPT_LABELS_FILE = "concept_labels.json"
# Optional: bundles written before unit visualisations and the embedding still load.
UNITS_DIR = "units"
UNITS_INDEX_FILE = f"{UNITS_DIR}/index.json"
PATCHES_PER_UNIT = 24
"""Top hold-out patches a bundle shows per ranked unit unless built with another count: the paper shows
experts "dozens" (the reference renders 64). ``meta.json`` ``unit_visualisation.patches_per_unit`` records it."""
EMBEDDING_FILE = "embedding.json"
SUSPICIOUS_DIR = "suspicious"
SUSPICIOUS_INDEX_FILE = f"{SUSPICIOUS_DIR}/index.json"
"""Optional: the hold-out set's most suspicious cells per lesion class and their images (training/suspicious.py)."""
INT8_ONNX_FILE = "fcn.int8.onnx"
"""Optional: the FCN quantized to int8 (``python -m training quantize``); ``meta.json`` ``int8`` says how it was
made and holds its accuracy gates against ``fcn.onnx`` (:attr:`Bundle.int8`, :meth:`Bundle.int8_failed_gates`)."""
REQUIRED_FILES = (WEIGHTS_FILE, ONNX_FILE, HEAD_FILE, RANKINGS_FILE)


class BundleError(Exception):
    """The bundle cannot be used; the message says which file and what to do."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != META_FILE
    )


def finalise_bundle(root: Path, meta: dict[str, Any]) -> str:
    """Record the sha256 of every file under ``root`` in ``meta["files"]``, write ``meta.json``.

    Returns the bundle hash (sha256 of the written ``meta.json``).
    """
    root = Path(root)
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise BundleError(f"cannot finalise {root}: required files missing: {', '.join(missing)}")
    meta = dict(meta)
    meta["schema_version"] = SCHEMA_VERSION
    meta["files"] = {name: sha256_file(root / name) for name in _bundle_files(root)}
    data = json.dumps(meta, indent=2, sort_keys=True).encode() + b"\n"
    (root / META_FILE).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _score_rule(root: Path, meta: dict[str, Any]) -> str:
    """``meta["image_score"]["rule"]`` or :data:`DEFAULT_SCORE_RULE`; :class:`BundleError` for one this build lacks."""
    section = meta.get("image_score")
    if section is None:
        return DEFAULT_SCORE_RULE
    if not isinstance(section, dict):
        raise BundleError(f"{root}/{META_FILE}: image_score must be an object, got {section!r}")
    rule = section.get("rule", DEFAULT_SCORE_RULE)
    if rule not in SCORE_RULES:
        raise BundleError(
            f"{root}/{META_FILE}: image_score.rule must be one of {', '.join(SCORE_RULES)}, got {rule!r}; "
            "rebuild the bundle or upgrade the service"
        )
    return str(rule)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk and the metadata the service needs."""

    root: Path
    meta: dict[str, Any] = field(repr=False)
    hash: str

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.root.name))

    @property
    def id(self) -> str:
        """Human-readable model id: ``name@<first 12 hex digits of the hash>``."""
        return f"{self.name}@{self.hash[:12]}"

    @property
    def classes(self) -> list[str]:
        return list(self.meta["model"]["classes"])

    @property
    def num_units(self) -> int:
        return int(self.meta["model"]["num_units"])

    @property
    def input_short_side(self) -> int:
        return int(self.meta["preprocessing"]["input_short_side"])

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.meta["preprocessing"]["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.meta["preprocessing"]["std"])

    @property
    def score_rule(self) -> str:
        """The image-level score rule (:mod:`deepminer.scoring`): ``meta.json`` ``image_score.rule``, else default."""
        return _score_rule(self.root, self.meta)

    @property
    def patch_cells(self) -> int:
        """The classifier's patch side in layer4 cells (``patch_size / 32``, at least 1): ``patch_peak``'s block."""
        return patch_cells(int(self.meta["preprocessing"]["patch_size"]))

    def path(self, name: str) -> Path:
        """Absolute path of a file listed in the bundle."""
        if name not in self.meta["files"]:
            raise BundleError(f"{name} is not part of bundle {self.root}")
        return self.root / name

    def has(self, name: str) -> bool:
        return name in self.meta["files"]

    @property
    def int8(self) -> dict[str, Any] | None:
        """``meta.json`` ``int8`` (quantization and accuracy gates of ``fcn.int8.onnx``), or None without that file."""
        if not self.has(INT8_ONNX_FILE):
            return None
        section = self.meta.get("int8")
        if not isinstance(section, dict) or not isinstance(section.get("gates"), dict):
            raise BundleError(f"{self.root}/{META_FILE} lists {INT8_ONNX_FILE} but has no int8.gates; re-run quantize")
        return section

    def int8_failed_gates(self) -> list[str]:
        """The int8 accuracy gates that failed, each as ``name: value (bound)``; [] when all held.

        :class:`BundleError` when the bundle has no int8 file.
        """
        section = self.int8
        if section is None:
            raise BundleError(f"bundle {self.root} has no {INT8_ONNX_FILE}")
        checks = section["gates"].get("checks", {})
        return [f"{name}: {check['value']} ({check['bound']})" for name, check in checks.items() if not check["pass"]]

    @cached_property
    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """The class weights w ``(C, K)`` and biases ``(C,)`` of the classifier / FCN head."""
        with np.load(self.path(HEAD_FILE)) as npz:
            return npz["weight"].astype(np.float32), npz["bias"].astype(np.float32)

    @cached_property
    def aux_features(self) -> tuple[AuxFeature, ...]:
        """The auxiliary features the model takes (``meta.json`` ``model.aux_features``), in input order; () if none."""
        try:
            return tuple(AuxFeature.from_json(f) for f in self.meta["model"].get("aux_features", []))
        except ValueError as exc:
            raise BundleError(f"{self.root}/{META_FILE}: model.aux_features: {exc}") from None

    @cached_property
    def aux_weight(self) -> np.ndarray | None:
        """The auxiliary features' class weights V ``(C, J)`` (``head.npz`` ``aux_weight``), or None without them."""
        if not self.aux_features:
            return None
        with np.load(self.path(HEAD_FILE)) as npz:
            if "aux_weight" not in npz:
                raise BundleError(
                    f"{self.root}/{HEAD_FILE} lacks aux_weight, but meta.json declares auxiliary features"
                )
            return npz["aux_weight"].astype(np.float32)

    @cached_property
    def rankings(self) -> dict[str, Any]:
        return json.loads(self.path(RANKINGS_FILE).read_text())

    @cached_property
    def unit_index(self) -> dict[str, Any] | None:
        """``units/index.json`` (top patches per ranked unit, keyed by unit id), or None in older bundles."""
        return json.loads(self.path(UNITS_INDEX_FILE).read_text()) if self.has(UNITS_INDEX_FILE) else None

    @cached_property
    def embedding(self) -> dict[str, Any] | None:
        """``embedding.json`` (2-D PCA of every unit), or None in older bundles."""
        return json.loads(self.path(EMBEDDING_FILE).read_text()) if self.has(EMBEDDING_FILE) else None

    @cached_property
    def suspicious_patches(self) -> dict[str, Any] | None:
        """``suspicious/index.json`` (the hold-out set's top cells per lesion class), or None in older bundles."""
        return json.loads(self.path(SUSPICIOUS_INDEX_FILE).read_text()) if self.has(SUSPICIOUS_INDEX_FILE) else None


def load_bundle(root: Path | str, *, verify: bool = True) -> Bundle:
    """Open a bundle directory; with ``verify`` check every file against ``meta.json``.

    Raises :class:`BundleError` naming the problem: no such directory, no or
    unreadable ``meta.json``, an unsupported schema version, a missing, unknown
    or modified file, an unknown image-score rule (:attr:`Bundle.score_rule`).
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"model bundle directory not found: {root} (build one with `python -m training demo`)")
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise BundleError(f"{root} is not a model bundle: {META_FILE} is missing")
    data = meta_path.read_bytes()
    try:
        meta = json.loads(data)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_path} is not valid JSON: {exc}") from None
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{meta_path}: unsupported bundle schema_version {version!r}, this build reads {SCHEMA_VERSION}")
    files = meta.get("files")
    if not isinstance(files, dict):
        raise BundleError(f"{meta_path} has no 'files' table of sha256 hashes")
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"{meta_path} does not list the required file {name}")
    if verify:
        present = set(_bundle_files(root))
        missing = sorted(set(files) - present)
        if missing:
            raise BundleError(f"bundle {root} is incomplete: missing {', '.join(missing[:10])}; copy the whole bundle directory")
        unknown = sorted(present - set(files))
        if unknown:
            raise BundleError(
                f"bundle {root} holds files meta.json does not list: {', '.join(unknown[:10])}; "
                "remove them or rebuild the bundle"
            )
        for name, expected in files.items():
            actual = sha256_file(root / name)
            if actual != expected:
                raise BundleError(
                    f"bundle {root}: {name} has sha256 {actual[:16]}…, meta.json says {expected[:16]}…; "
                    "the file was modified or corrupted, restore or rebuild the bundle"
                )
    _score_rule(root, meta)  # an unknown rule stops start-up, not the first request
    return Bundle(root=root.resolve(), meta=meta, hash=hashlib.sha256(data).hexdigest())
