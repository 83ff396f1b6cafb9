"""One configuration for a training run, recorded in the bundle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.patches import PatchRule


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a bundle. Defaults are the paper's (DESIGN.md §1)."""

    name: str = "deepminer-resnet152"
    depth: int = 152
    patch_size: int = 227
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # The reference multiplies the learning rate by 0.1 from epoch 4 (0-based).
    lr_decay_epoch: int | None = 4
    lr_decay_factor: float = 0.1
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    imagenet_weights: Path | None = None
    device: str = "auto"
    # Lesion patches are rare; sampling classes equally keeps the net from
    # predicting "normal" everywhere.
    balance_classes: bool = True
    # Patches drawn per epoch; None draws as many as there are training patches.
    samples_per_epoch: int | None = None
    augment_flips: bool = True
    # Swap rows and columns at random; with the flips, every rotation by 90°.
    augment_transpose: bool = False
    # "bare": the paper's patches; "image": each patch classified inside its whole image as the FCN sees it
    # (training/context.py), every patch of a batch's images at once.
    patch_context: str = "bare"
    # With patch_context "image": images per SGD step (batch_size counts patches for bare patches only).
    images_per_batch: int = 4
    # With patch_context "image" and balance_classes: class c's loss weight is (N / (C n_c)) ** exponent; 1 fully
    # balances the classes, 0 weighs every patch alike.
    class_weight_exponent: float = 0.5
    # With patch_context "image": normal patches are supervised cell by cell (training/context.py cellwise_normal).
    normal_cells: bool = False
    # A class whose fc row and bias stay at zero, so that every other class's logit, and so its CAM, is its
    # log-odds against this class (None: the paper's free head).
    reference_class: str | None = None
    top_per_image: int = 8
    top_per_class: int = 20
    threshold_quantile: float = 0.99
    eval_batch_size: int = 64
    # Names of the manifest's ``aux:<name>`` columns the classifier also takes
    # (paper §2.5, deepminer.auxiliary); empty: images only.
    aux_features: tuple[str, ...] = ()
    patch_rule: PatchRule = field(default_factory=PatchRule)

    @property
    def input_short_side(self) -> int:
        """Whole mammograms are scaled so one patch is a quarter of the width: short side = 4 × patch size."""
        return 4 * self.patch_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["imagenet_weights"] = str(self.imagenet_weights) if self.imagenet_weights else None
        d["patch_rule"] = self.patch_rule.to_dict()
        d["split_fractions"] = list(self.split_fractions)
        d["aux_features"] = list(self.aux_features)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, base: TrainConfig | None = None) -> TrainConfig:
        """``base`` (default: the paper's config) with ``values`` applied, checked field by field.

        ``values`` uses :meth:`to_dict`'s shape: ``patch_rule`` is a mapping of
        :class:`PatchRule` fields (its derived ``text`` is ignored), sequences
        may be lists, paths strings. Unknown fields and wrong types raise
        ``ValueError`` naming the field and the value received.
        """
        base = base or cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if name == "patch_rule":
                changes[name] = _patch_rule(value, base.patch_rule)
            elif value is None:
                if name not in NULLABLE_FIELDS:
                    raise ValueError(f"{name} cannot be empty; got None")
                changes[name] = None
            elif name == "reference_class":
                changes[name] = _typed(name, value, str)
            elif name == "imagenet_weights":
                changes[name] = Path(_typed(name, value, str))
            elif name == "split_fractions":
                if not isinstance(value, (list, tuple)) or len(value) != 3:
                    raise ValueError(f"split_fractions must be 3 numbers (train, hold-out, test), got {value!r}")
                changes[name] = tuple(_typed(name, v, float) for v in value)
            elif name == "aux_features":
                changes[name] = _aux_features(value)
            else:
                default = getattr(cls(), name)
                kind = type(default) if default is not None else int
                changes[name] = _typed(name, value, kind)
        return base.replace(**changes)

    def replace(self, **changes: Any) -> TrainConfig:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return TrainConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


# Fields where None means "off" or "all" (no lr decay, no ImageNet weights, every training patch per epoch).
NULLABLE_FIELDS = frozenset({"lr_decay_epoch", "imagenet_weights", "samples_per_epoch", "reference_class"})


def _typed(name: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind``; ints are accepted for floats, nothing else is converted."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ValueError(f"{name} must be {kind.__name__}, got {value!r}")
    return value


def _aux_features(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"aux_features must be a list of feature names (manifest columns aux:<name>), got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"aux_features names a feature twice: {list(value)}")
    return tuple(value)


def _patch_rule(value: Any, base: PatchRule) -> PatchRule:
    if isinstance(value, PatchRule):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"patch_rule must be a table of PatchRule fields, got {value!r}")
    known = {f.name for f in fields(PatchRule)}
    unknown = sorted(set(value) - known - {"text"})
    if unknown:
        raise ValueError(f"unknown patch_rule fields: {unknown}")
    changes: dict[str, Any] = {}
    for name, v in value.items():
        if name == "text":  # derived from the other fields, recorded for people
            continue
        if name == "priority":
            if not isinstance(v, (list, tuple)) or not all(isinstance(c, str) for c in v):
                raise ValueError(f"patch_rule.priority must be a list of class names, got {v!r}")
            changes[name] = tuple(v)
        elif name == "partly_touching":  # a word; PatchRule checks which
            if not isinstance(v, str):
                raise ValueError(f"patch_rule.partly_touching must be a string, got {v!r}")
            changes[name] = v
        else:
            changes[name] = _typed(f"patch_rule.{name}", v, float)
    return PatchRule(**{**{f.name: getattr(base, f.name) for f in fields(PatchRule)}, **changes})


DEMO_CONFIG = TrainConfig(
    name="deepminer-demo-resnet18",
    depth=18,
    # 96 px rather than less: with smaller patches every layer4 cell of a patch
    # touches the zero padding, so the patch classifier does not carry over to
    # whole mammograms, where most cells see only tissue.
    patch_size=96,
    epochs=6,
    # The demo trains from scratch (no ImageNet weights offline), which needs a
    # larger step than the paper's fine-tuning rate.
    lr=0.01,
    lr_decay_epoch=4,
    # 32 batches an epoch keeps the demo to a few minutes on 2 CPU cores.
    samples_per_epoch=1024,
    # A small data set trained from scratch: all 8 rotations/reflections of each patch.
    augment_transpose=True,
    top_per_image=8,
    top_per_class=20,
)
