"""Checkpoints: stopping after an epoch and resuming ends exactly where an uninterrupted run does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepminer.fcn import build_classifier
from training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from training.config import TrainConfig
from training.data import PatchSet
from training.patches import Box
from training.plots import plot_learning_curves
from training.train import TrainResult, fine_tune

# Two epochs of two batches; the lr drops for the second epoch, so the schedule
# and the SGD momentum both have to come back from the checkpoint.
CONFIG = TrainConfig(
    name="resume-check", depth=18, patch_size=32, epochs=2, batch_size=8, samples_per_epoch=16, lr=0.05,
    lr_decay_epoch=1, device="cpu", eval_batch_size=16,
)
CPU = torch.device("cpu")


def patches(n: int, seed: int) -> PatchSet:
    rng = np.random.default_rng(seed)
    pixels = rng.random((n, CONFIG.patch_size, CONFIG.patch_size)).astype(np.float16)
    labels = rng.permutation(np.arange(n) % 3).astype(np.int64)
    return PatchSet(pixels, labels, tuple(f"img{i}" for i in range(n)), tuple(Box(0, 0, 1) for _ in range(n)))


TRAIN, HOLDOUT = patches(40, 1), patches(12, 2)


def run(config: TrainConfig, *, init_seed: int = 0, **kwargs) -> TrainResult:
    torch.manual_seed(init_seed)
    model = build_classifier(depth=config.depth, num_classes=3)
    return fine_tune(model, TRAIN, HOLDOUT, config, device=CPU, progress=False, **kwargs)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "patches_per_second")} for r in history]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[TrainResult, dict, Path]:
    """Two epochs without a break, the checkpoint it leaves after the second, and its folder."""
    folder = tmp_path_factory.mktemp("straight")
    result = run(CONFIG, checkpoint_dir=folder)
    return result, torch.load(folder / CHECKPOINT_FILE, weights_only=True), folder


def test_resume_after_one_epoch_gives_the_same_weights(straight, tmp_path):
    result, last, _ = straight
    run(CONFIG.replace(epochs=1), checkpoint_dir=tmp_path)  # "interrupted" after epoch 1
    first = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert first["epoch"] == 0 and len(first["history"]) == 1
    assert any("momentum_buffer" in s for s in first["optimiser"]["state"].values())

    # Different initial weights: everything must come from the checkpoint.
    resumed = run(CONFIG, init_seed=123, checkpoint_dir=tmp_path, resume=True)
    again = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert again["epoch"] == 1
    assert_same_state(again["model"], last["model"])  # the last epoch's weights
    assert_same_state(resumed.model.state_dict(), result.model.state_dict())  # the selected epoch's
    assert resumed.best_epoch == result.best_epoch
    assert without_timings(resumed.history) == without_timings(result.history)
    assert [r["lr"] for r in resumed.history] == [0.05, pytest.approx(0.005)]
    assert again["numpy_rng"] == last["numpy_rng"]


def test_resume_without_a_checkpoint_starts_fresh(straight, tmp_path):
    result, _, _ = straight
    fresh = run(CONFIG, checkpoint_dir=tmp_path / "empty", resume=True)
    assert_same_state(fresh.model.state_dict(), result.model.state_dict())


def test_resume_of_a_finished_run_trains_nothing_and_returns_the_selection(straight):
    result, _, folder = straight
    again = run(CONFIG, init_seed=7, checkpoint_dir=folder, resume=True)
    assert_same_state(again.model.state_dict(), result.model.state_dict())
    assert without_timings(again.history) == without_timings(result.history)


def test_checkpoint_from_another_run_is_refused(tmp_path):
    run(CONFIG.replace(epochs=1), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different run \(lr: checkpoint 0.05, now 0.1"):
        load_checkpoint(tmp_path, config=CONFIG.replace(lr=0.1))
    with pytest.raises(ValueError, match="different run"):
        run(CONFIG.replace(seed=1), checkpoint_dir=tmp_path, resume=True)
    # More epochs and another name do not change the trajectory: the 1-epoch run's checkpoint is taken up.
    resumed = load_checkpoint(tmp_path, config=CONFIG.replace(epochs=9, name="longer"))
    assert resumed is not None and resumed.epoch == 0 and resumed.config["epochs"] == 1
    with pytest.raises(ValueError, match="checkpoint directory"):
        run(CONFIG, resume=True)


def test_learning_curves_plot(straight, tmp_path):
    result, _, _ = straight
    path = plot_learning_curves(result.history, tmp_path / "plots" / "curves.png", title="t",
                                best_epoch=result.best_epoch)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (600, 400)
    with pytest.raises(ValueError, match="empty"):
        plot_learning_curves([], tmp_path / "none.png", title="t")
