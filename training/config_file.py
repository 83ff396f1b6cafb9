"""Run files: a whole training run in one TOML file (``python -m training build --config run.toml``).

Flags given on the command line override the file, and the file overrides the
defaults (the paper's settings). The effective config is written into every
bundle as ``config.toml`` in the same format, so ``--config <bundle>/config.toml``
repeats a run. Relative paths in a file are relative to the file's folder.
TOML has no null: write ``"none"`` to switch off ``lr_decay_epoch``,
``samples_per_epoch``, ``imagenet_weights`` or ``freeze_batchnorm_epoch``.

Top-level keys (:class:`~training.config.TrainConfig`)::

    name = "deepminer-resnet152"   # bundle name
    depth = 152                    # ResNet depth: 18, 34, 50, 101 or 152
    patch_size = 227               # patch side after resizing; whole images get a short side of 4 x this
    epochs = 5
    batch_size = 32                # global batch: the same however many processes share it
    lr = 0.0001                    # SGD learning rate
    momentum = 0.9
    weight_decay = 0.0001
    lr_decay_epoch = 4             # 0-based epoch from which lr is multiplied by lr_decay_factor; "none": never
    lr_decay_factor = 0.1
    lr_schedule = "step"           # "step" (the decay above) or "cosine" (lr down to 0 at every step)
    optimiser = "sgd"              # "sgd" (with momentum, the paper's) or "adamw" (momentum unused)
    seed = 0                       # split, initialisation, epoch order and flips
    split_fractions = [0.8, 0.1, 0.1]   # train, hold-out, test (by case)
    imagenet_weights = "none"      # local torchvision ImageNet state-dict file; never downloaded
    device = "auto"                # auto, cpu or cuda
    holdout_every = 1              # hold-out AUC after every N-th epoch and the last (the learning curve)
    balance_classes = true         # draw every class equally often
    samples_per_epoch = "none"     # patches drawn per epoch; "none": as many as there are training patches
    augment_flips = true           # random horizontal and vertical flips
    augment_transpose = false      # random row/column swaps (with the flips: all 90° rotations)
    augment_shift = false          # patch_context "image": 0-31 px cut off each image's top and left (grid phase)
    cell_weights = "centre"        # patch_context "image": a patch's cells, "centre" (centres inside) or "overlap"
    lesion_crops = 0               # patch_context "image": windows around lesion patches per step, besides the images
    lesion_crop_size = 256         # their side in network-input pixels
    freeze_batchnorm_epoch = "none"   # 0-based epoch from which BatchNorm keeps its running statistics; "none": never
    lesion_pair_weight = 0.0       # weight of a benign-against-malignant loss on lesion patches (normal left out)
    top_per_image = 8              # units counted per hold-out image and class
    top_per_class = 20             # units ranked per class for the experts
    threshold_quantile = 0.99      # unit activation threshold (Lu & Perer)
    eval_batch_size = 64
    aux_features = []              # manifest columns aux:<name> the classifier also takes, e.g. ["age"]

    [patch_rule]                   # training.patches.PatchRule
    side_fraction = 0.25           # window side / image width
    stride_fraction = 0.5          # stride / window side
    min_tissue = 0.5               # least breast-tissue fraction of a kept window
    lesion_fraction_of_patch = 0.3
    lesion_fraction_inside = 0.3
    priority = ["malignant", "benign", "normal"]
    partly_touching = "drop"       # window touching a lesion, meeting neither 30% rule: "drop" or "normal"

    [build]                        # what `build` would otherwise take as flags
    manifest = "data/phantoms/manifest.csv"
    out = "bundles/mine"
    auto_labels = false
    checkpoint_dir = "checkpoints/mine"   # write a checkpoint after every epoch
    resume = false                 # continue from checkpoint_dir when it holds one
    top_patches = 24               # hold-out patches shown per ranked unit in the survey
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from training.config import NULLABLE_FIELDS, TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE = "config.toml"
"""Name of the effective run file inside a bundle."""

BUILD_KEYS: dict[str, type] = {
    "manifest": Path,
    "out": Path,
    "auto_labels": bool,
    "checkpoint_dir": Path,
    "resume": bool,
    "top_patches": int,
}


@dataclass(frozen=True)
class RunFile:
    """A parsed run file: the training config and the ``[build]`` options it sets."""

    config: TrainConfig
    build: dict[str, Any] = field(default_factory=dict)


def read_run_file(path: Path, *, base: TrainConfig | None = None) -> RunFile:
    """Parse ``path`` on top of ``base`` (default: the paper's config).

    Raises ``ValueError`` naming the file and the key for unknown keys, wrong
    types and TOML syntax errors; ``FileNotFoundError`` when there is no file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run file not found: {path}")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    here = path.resolve().parent
    build = data.pop("build", {})
    if not isinstance(build, dict):
        raise ValueError(f"{path}: [build] must be a table, got {build!r}")  # noqa: TRY004 - the file is wrong
    for name, value in data.items():
        if name in NULLABLE_FIELDS and isinstance(value, str) and value.lower() in ("none", ""):
            data[name] = None
    if isinstance(data.get("imagenet_weights"), str):
        data["imagenet_weights"] = str(_relative_to(here, data["imagenet_weights"]))
    try:
        config = TrainConfig.from_dict(data, base=base)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return RunFile(config=config, build=_build_options(path, build, here))


def _build_options(path: Path, build: dict[str, Any], here: Path) -> dict[str, Any]:
    unknown = sorted(set(build) - set(BUILD_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown [build] keys {unknown}; known: {sorted(BUILD_KEYS)}")
    options: dict[str, Any] = {}
    for name, value in build.items():
        kind = BUILD_KEYS[name]
        if kind is Path:
            if not isinstance(value, str):
                raise ValueError(f"{path}: build.{name} must be a path string, got {value!r}")
            options[name] = _relative_to(here, value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{path}: build.{name} must be {kind.__name__}, got {value!r}")
        else:
            options[name] = value
    return options


def _relative_to(folder: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else folder / p


def to_toml(config: TrainConfig, *, build: dict[str, Any] | None = None) -> str:
    """``config`` (and ``[build]`` options) as a run file that :func:`read_run_file` reads back to the same config.

    Paths are made absolute.
    """
    values = config.to_dict()
    # Paths are written absolute, so the file means the same wherever it is read from.
    if values["imagenet_weights"]:
        values["imagenet_weights"] = str(Path(values["imagenet_weights"]).expanduser().resolve())
    build = {k: Path(v).expanduser().resolve() if isinstance(v, Path) else v for k, v in (build or {}).items()}
    rule = values.pop("patch_rule")
    parts = [
        "# Training run file; training/config_file.py documents every key.\n",
        tomli_w.dumps(_toml_ready(values)),
        "\n[patch_rule]\n# " + " ".join(str(rule.pop("text")).split()) + "\n",
        tomli_w.dumps(_toml_ready(rule)),
    ]
    if build:
        parts += ["\n", tomli_w.dumps({"build": _toml_ready({k: v for k, v in build.items() if v is not None})})]
    return "".join(parts)


def write_run_file(path: Path, config: TrainConfig, *, build: dict[str, Any] | None = None) -> Path:
    """Write :func:`to_toml` to ``path``; returns ``path``."""
    path = Path(path)
    path.write_text(to_toml(config, build=build), encoding="utf-8")
    return path


def _toml_ready(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as TOML can hold them: TOML has no null, so None becomes ``"none"``; paths become strings."""
    return {
        name: "none" if value is None else str(value) if isinstance(value, Path) else value
        for name, value in values.items()
    }
