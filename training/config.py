"""One configuration for a training run, recorded in the bundle."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deepminer.scoring import SCORE_RULES
from training.context import CELL_WEIGHTS, PATCH_CONTEXTS
from training.patches import PatchRule

LR_SCHEDULES = ("step", "cosine")
OPTIMISERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a bundle. Defaults are exactly the paper's and its reference code's
    (DESIGN.md §1): the recipe ``paper``. Every other value is a named deviation that the bundle records."""

    # Which recipe the values started from: "paper" (these defaults) or "demo" (DEMO_CONFIG).
    recipe: str = "paper"
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
    # "step": the reference's schedule above. "cosine": lr × (1 + cos(π t / epochs)) / 2 at every SGD step, t the
    # epochs done so far (fractional), from lr down to 0 at the end (lr_decay_epoch and lr_decay_factor unused).
    lr_schedule: str = "step"
    # "sgd": the paper's SGD with momentum. "adamw": AdamW (Loshchilov & Hutter 2019; betas 0.9 / 0.999, weight
    # decay decoupled from the gradient; momentum unused), with the same lr schedule.
    optimiser: str = "sgd"
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    imagenet_weights: Path | None = None
    device: str = "auto"
    # The paper shuffles plainly. True: bare patches are drawn class-balanced with replacement; patches in their
    # image are weighted by class instead (class_weight_exponent).
    balance_classes: bool = False
    # Patches drawn per epoch; None draws as many as there are training patches.
    samples_per_epoch: int | None = None
    # Random left-right and top-bottom flips (the paper trains without augmentation).
    augment_flips: bool = False
    # Which epoch's weights the bundle keeps: "last" (the reference code) or "best_holdout" (best hold-out mean
    # AUC; the hold-out set also ranks the units, so that choice sees it twice).
    select_epoch: str = "last"
    # Hold-out AUC after every holdout_every-th epoch and after the last (the learning curve; with "best_holdout"
    # only those epochs compete). Evaluation does not change training: the weights are the same for any value.
    holdout_every: int = 1
    # Swap rows and columns at random; with the flips, every rotation by 90°.
    augment_transpose: bool = False
    # With patch_context "image": cut a random 0-31 rows and columns off each image's top and left at every step. A
    # patch's cells are those whose centre (pixel 32 i) lies in it, so at a fixed phase the cells of a patch aligned
    # to the grid sit half a cell above and left of its centre, and the CAM learns that lean; over every phase they
    # are centred. Cutting, not padding: the image still meets the network's zero padding as at test time.
    augment_shift: bool = False
    # "bare": the paper's patches; "image": each patch classified inside its whole image as the FCN sees it
    # (training/context.py), every patch of a batch's images at once.
    patch_context: str = "bare"
    # With patch_context "image": how a patch's layer4 cells make its logits (training/context.py patch_cells).
    # "centre": the cells whose centre lies in the patch. The demo's patches start on cell centres, so their cells
    # sit half a cell above and left of the patch's centre, and the CAM learns to peak there. "overlap": each cell
    # weighs the share of its 32 x 32 footprint that the patch covers, centred on the patch at every phase.
    cell_weights: str = "centre"
    # Adds lesion_pair_weight x a second cross-entropy for every lesion patch: its class among the lesion classes
    # alone (benign against malignant; normal's logit takes no part), class-weighted (training/train.py).
    lesion_pair_weight: float = 0.0
    # With patch_context "image": images per SGD step (batch_size counts patches for bare patches only).
    images_per_batch: int = 4
    # With patch_context "image" and balance_classes: class c's loss weight is (N / (C n_c)) ** exponent; 1 fully
    # balances the classes, 0 weighs every patch alike.
    class_weight_exponent: float = 0.5
    # The forward pass in training: "fp32", "bf16" (autocast; weights stay float32) or "auto" (bf16 where the
    # hardware has it natively). Evaluation, ranking and the exported FCN are always float32.
    train_precision: str = "fp32"
    # With patch_context "image": the share of images without a lesion drawn each epoch (all images with one are).
    normal_image_share: float = 1.0
    # With patch_context "image": how a lesion patch's cells make its logits. "mean" is the patch classifier
    # exactly; "max" takes each class's largest cell logit (multiple-instance learning: the lesion is in some cell,
    # and no cell of a malignant patch may look benign).
    lesion_pooling: str = "mean"
    # With patch_context "image": lesion crops per SGD step besides its images (training/batches.py lesion_crops).
    # Each is a lesion_crop_size-pixel window of a training image around one lesion patch (every lesion class
    # equally likely), classified with the step's images, in one BatchNorm batch, as their patches are. Lesion
    # patches are a few percent of an image's: the crops show the classifier many more lesions for little compute.
    lesion_crops: int = 0
    lesion_crop_size: int = 256
    # 0-based epoch from which BatchNorm normalises with its running statistics and stops updating them, while
    # every weight trains on: the last epochs then fit the classifier as evaluation and the FCN run it. With
    # batches of two images, batch statistics swing from step to step and eval mode is another network (None:
    # never, the paper's).
    freeze_batchnorm_epoch: int | None = None
    # With patch_context "image": normal patches are supervised cell by cell (training/context.py cellwise_normal).
    normal_cells: bool = False
    # A class whose fc row and bias stay at zero, so that every other class's logit, and so its CAM, is its
    # log-odds against this class (None: the paper's free head).
    reference_class: str | None = None
    # Automatic labels (build --auto-labels): BI-RADS categories compete with the concepts (training/concepts.py).
    label_categories: bool = False
    top_per_image: int = 8
    top_per_class: int = 20
    # The hold-out cells most likely malignant, and most likely benign, kept per class (training/suspicious.py).
    suspicious_patches: int = 24
    # The image-level score rule the bundle records (deepminer/scoring.py): "breast_peak" each class's peak cell
    # over the breast (the reference benchmark's peak of the probability map), "patch_peak" the patch classifier at
    # the most suspicious (least normal) patch-sized block, "worst_patch" at the block most likely of the most severe
    # class any block is classified as, "classifier" the classifier on the whole image.
    score_rule: str = "breast_peak"
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

    def __post_init__(self) -> None:
        checks = {
            "recipe": (self.recipe, ("paper", "demo")),
            "select_epoch": (self.select_epoch, ("last", "best_holdout")),
            "lr_schedule": (self.lr_schedule, LR_SCHEDULES),
            "optimiser": (self.optimiser, OPTIMISERS),
            "patch_context": (self.patch_context, PATCH_CONTEXTS),
            "cell_weights": (self.cell_weights, CELL_WEIGHTS),
            "train_precision": (self.train_precision, ("fp32", "bf16", "auto")),
            "lesion_pooling": (self.lesion_pooling, ("mean", "max")),
            "score_rule": (self.score_rule, SCORE_RULES),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.augment_shift and self.patch_context != "image":
            raise ValueError("augment_shift moves whole images under their patches: it needs patch_context 'image'")
        if self.freeze_batchnorm_epoch is not None and self.freeze_batchnorm_epoch < 0:
            raise ValueError(f"freeze_batchnorm_epoch must be a 0-based epoch or None, got {self.freeze_batchnorm_epoch}")
        if isinstance(self.holdout_every, bool) or not isinstance(self.holdout_every, int) or self.holdout_every < 1:
            raise ValueError(f"holdout_every must be a whole number of epochs >= 1, got {self.holdout_every!r}")
        if self.lesion_pair_weight < 0:
            raise ValueError(f"lesion_pair_weight must be 0 (off) or more, got {self.lesion_pair_weight}")
        if self.lesion_crops < 0:
            raise ValueError(f"lesion_crops must be 0 (off) or more, got {self.lesion_crops}")
        if self.lesion_crops and self.patch_context != "image":
            raise ValueError("lesion_crops are windows of whole images around their patches: they need "
                             "patch_context 'image'")
        if self.lesion_crops and self.lesion_crop_size < self.patch_size:
            raise ValueError(f"lesion_crop_size ({self.lesion_crop_size}) must hold a whole patch "
                             f"(patch_size {self.patch_size})")
        if isinstance(self.suspicious_patches, bool) or not isinstance(self.suspicious_patches, int) or (
            self.suspicious_patches < 1
        ):
            raise ValueError(f"suspicious_patches must be a whole number >= 1, got {self.suspicious_patches!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return TrainConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


# Fields where None means "off" or "all" (no lr decay, no ImageNet weights, every training patch per epoch).
NULLABLE_FIELDS = frozenset(
    {"lr_decay_epoch", "imagenet_weights", "samples_per_epoch", "reference_class", "freeze_batchnorm_epoch"}
)


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
    recipe="demo",
    name="deepminer-demo-resnet18",
    depth=18,
    # Every deviation from the paper below is measured by the explanation-quality report
    # (training/quality/; README, "How good are these explanations?").
    # 112 px patches: input short side 448, the phantoms' own width, so nothing is upsampled (a 3.5 x 3.5-cell
    # patch). With 224 px crops the build took 371 s on a 2-core AMD EPYC against 502 s at 128 px (256 px crops),
    # and lesion images right on unseen phantoms were 75% / 78% against 75% / 72%. At 96 px the CAM's peak hit the
    # lesion in 81-84% of unseen lesion images, at 128 px in 91% (before cell_weights "overlap").
    patch_size=112,
    # Each patch is classified inside its whole image, as the FCN sees it at test time: small patches have no
    # interior cells, and a classifier trained on them does not carry over to whole mammograms.
    patch_context="image",
    # Each cell weighs the share of its footprint in the patch, so a patch's supervision is centred on it: with the
    # cells whose centre lies in it, the CAM peaked 16 px up and left of lesions (pointing game on unseen phantoms
    # 81% / 84% -> 94% / 91%, same machine, both cores).
    cell_weights="overlap",
    # Background and skin-line windows become "normal" patches, so no lesion class is learnt off the breast.
    patch_rule=PatchRule(min_tissue=0.0),
    # Normal patches cell by cell, so no single cell of normal tissue may look like a lesion.
    normal_cells=True,
    # normal's logit is held at 0: every other class's logit, and so its CAM, is its log-odds against normal.
    reference_class="normal",
    # Lesion patches are 3% of all: weighted by (N / (C n_c)) ** 0.5, and three quarters of the lesion-free images
    # skipped.
    balance_classes=True,
    class_weight_exponent=0.5,
    normal_image_share=0.25,
    augment_flips=True,
    # More lesions and a sharper benign-against-malignant signal: eight lesion crops a step in the images'
    # BatchNorm batch and the lesion-pair loss. With the cosine schedule and BatchNorm frozen for the last two
    # epochs, on unseen phantoms (seeds 4242 / 777, same machine, both cores, 128 px patches and 256 px crops):
    # lesion images right 62% / 59% -> 75% / 72%, concept named 62% / 62% -> 100% / 100%, pointing game 94% / 91%
    # both ways. 192 px crops (each holds its 112 px patch at a random place): with 224 px crops the build took 10%
    # longer, and the largest benign probability outside the breast reached 0.066 on one unseen set (README).
    lesion_crops=8,
    lesion_crop_size=192,
    lesion_pair_weight=1.0,
    # The demo's two-view phantoms (DEMO_PHANTOMS: every lesion image and a quarter of the others, about 70 steps
    # an epoch), BatchNorm never frozen. Six epochs with BatchNorm frozen from epoch 4 gave lesion images right
    # 72 / 69 / 69% on unseen seeds 4242 / 777 / 2026 against 78 / 75 / 78% (a 2-core Xeon; README).
    freeze_batchnorm_epoch=None,
    # From scratch (no ImageNet weights offline), with AdamW rather than the paper's SGD: the classifier is short of
    # steps, and AdamW learns in six epochs what SGD (lr 0.03, momentum 0.9) had not in seven. SGD read every round
    # or oval mass with circumscribed margins malignant, on its own training images too, and learnt them only in
    # fourteen epochs (twice the build time). On a 2-core AMD EPYC, unseen seeds 4242 / 777 / 2026, both cores:
    # lesion images right 72 / 72 / 72% -> 97 / 91 / 91% (with "worst_patch" below), benign AUC 0.89 / 0.96 / 0.79
    # -> 1.00 / 0.96 / 0.65 (seed 2026 holds 8 benign images, 6 of them round masses with indistinct margins, whose
    # pathology the phantoms draw at random). lr 0.001 gave 91 / 81 / 78%, 0.003 (seven epochs) 62 / 75 / 62%; five
    # epochs at 0.001 78 / 66 / 72% (README).
    optimiser="adamw",
    epochs=6,
    lr=0.0005,
    weight_decay=0.05,
    lr_schedule="cosine",
    lr_decay_epoch=None,
    # Two images a step: twice the SGD steps of four for the same compute (benign AUC 0.85 -> 0.88 on unseen phantoms).
    images_per_batch=2,
    # bfloat16 where the CPU or GPU computes it natively (about twice as fast), else float32.
    train_precision="auto",
    # The hold-out AUC after the last epoch only (the learning curve keeps every epoch's loss): the same weights,
    # 20 s sooner on 2 CPU cores (252 s against 272 s for the whole build).
    holdout_every=6,
    # Images are read as training read patches: the patch classifier at a patch-sized block of cells (3 x 3 at
    # 112 px: deepminer.grid.patch_cells), the worst one (malignant before benign, as an image's label ranks its
    # findings). Against each class's peak cell ("breast_peak"), benign AUC on unseen phantoms 0.856 -> 0.917 (the
    # least normal block, "patch_peak"). Against "patch_peak", with AdamW over seven epochs, lesion images right
    # 88 / 84 / 75% -> 88 / 78 / 88%: of the 22 unseen images with a benign and a malignant finding, "patch_peak"
    # read those whose benign finding was the surer one benign (README, "How good are these explanations?").
    score_rule="worst_patch",
    # Automatic labels name concepts, not BI-RADS categories: with AdamW's units, categories gave "Mass" to most
    # ranked units, those of calcification images among them (lesion images named 62 / 62 / 69% against 75 / 72 /
    # 94%; at lr 0.001 75 / 75 / 62% against 88 / 84 / 94%).
    label_categories=False,
    top_per_image=8,
    top_per_class=20,
)
"""The small phantom demo (`python -m training demo`, `build --recipe demo`): a few minutes on 2 CPU cores."""


RECIPES = {"paper": TrainConfig(), "demo": DEMO_CONFIG}
"""The named starting points of a run (``build --recipe``); the bundle records ``recipe`` and every value."""
