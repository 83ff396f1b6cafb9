"""Training checkpoints: everything needed to continue a run as if it had never stopped.

After every epoch :func:`~training.train.fine_tune` writes ``last.pt`` into the
checkpoint directory (rank 0 only, atomically: a crash mid-write leaves the
previous checkpoint). It holds the model and optimiser state (SGD momentum),
the last completed epoch, the NumPy generator that draws the epoch order and
flips, the torch (and CUDA) RNG states, the per-epoch history and the best
hold-out state so far. Resuming after epoch k therefore gives the same final
weights as an uninterrupted run. The world size may change between runs: the
global batch, and so the result, does not depend on it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import TrainConfig

CHECKPOINT_FILE = "last.pt"

# Fields that change the course of training. A checkpoint resumes only a run
# that agrees on all of them; ``epochs`` may grow, to train longer, except under
# the cosine schedule, whose every step depends on it. ``holdout_every`` counts
# too when the best hold-out epoch is kept: it decides which epochs compete.
TRAJECTORY_FIELDS = (
    "depth", "patch_size", "batch_size", "lr", "momentum", "weight_decay", "lr_decay_epoch", "lr_decay_factor",
    "lr_schedule", "optimiser", "seed", "split_fractions", "imagenet_weights", "balance_classes", "samples_per_epoch",
    "augment_flips", "augment_transpose", "augment_shift", "patch_context", "cell_weights", "images_per_batch",
    "class_weight_exponent", "train_precision", "normal_image_share", "lesion_pooling", "normal_cells",
    "reference_class", "lesion_crops", "lesion_crop_size", "freeze_batchnorm_epoch", "lesion_pair_weight",
    "patch_rule", "aux_features",
)


@dataclass
class Checkpoint:
    """The state of a run after ``epoch`` (0-based) has completed."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimiser: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_rng: torch.Tensor
    history: list[dict[str, Any]]
    best_score: float
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    config: dict[str, Any]
    world_size: int = 1
    cuda_rng: list[torch.Tensor] = field(default_factory=list)

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1

    def restore_rng(self, rng: np.random.Generator) -> None:
        """Put ``rng``, torch's and CUDA's generators back where they were when the checkpoint was taken."""
        rng.bit_generator.state = self.numpy_rng
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng and torch.cuda.is_available() and len(self.cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(self.cuda_rng)


def rng_states(rng: np.random.Generator) -> dict[str, Any]:
    """The RNG fields of a :class:`Checkpoint` for the current moment."""
    return {
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def save_checkpoint(directory: Path, checkpoint: Checkpoint) -> Path:
    """Write ``directory/last.pt`` atomically (temporary file, then rename); returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    tmp = path.with_name(path.name + ".tmp")
    torch.save(asdict(checkpoint), tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: Path, *, config: TrainConfig) -> Checkpoint | None:
    """The checkpoint in ``directory``, or None when there is none yet.

    Raises ``ValueError`` when the checkpoint comes from a run whose config
    differs in a field that changes training (:data:`TRAJECTORY_FIELDS`).
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    data = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint = Checkpoint(**data)
    # Fields added since the checkpoint was written count as their defaults.
    theirs, ours = {**TrainConfig().to_dict(), **checkpoint.config}, config.to_dict()
    fields = TRAJECTORY_FIELDS + (("epochs",) if ours["lr_schedule"] == "cosine" else ()) + (
        ("holdout_every",) if ours["select_epoch"] == "best_holdout" else ())
    differ = [name for name in fields if theirs.get(name) != ours.get(name)]
    if differ:
        details = ", ".join(f"{name}: checkpoint {theirs.get(name)!r}, now {ours.get(name)!r}" for name in differ)
        raise ValueError(f"checkpoint {path} is from a different run ({details}); use another --checkpoint-dir")
    return checkpoint
