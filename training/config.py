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
    top_per_image: int = 8
    top_per_class: int = 20
    threshold_quantile: float = 0.99
    eval_batch_size: int = 64
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
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return TrainConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


DEMO_CONFIG = TrainConfig(
    name="deepminer-demo-resnet18",
    depth=18,
    patch_size=64,
    epochs=6,
    # The demo trains from scratch (no ImageNet weights offline), which needs a
    # larger step than the paper's fine-tuning rate.
    lr=0.01,
    lr_decay_epoch=4,
    # 50 batches an epoch keeps the demo to a few minutes on 2 CPU cores.
    samples_per_epoch=1600,
    top_per_image=8,
    top_per_class=20,
)
