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
from training.train import TrainResult, fine_tune, learning_rate

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


class Stop(Exception):
    """Ends a run right after its first checkpoint, as a kill would."""


def test_cosine_schedule_resumes_exactly_and_only_with_the_same_epochs(tmp_path, monkeypatch):
    cosine = CONFIG.replace(lr_schedule="cosine")
    straight = run(cosine)
    assert [r["lr"] for r in straight.history] == [0.05, pytest.approx(0.025)]
    assert not torch.equal(straight.model.state_dict()["fc.weight"], run(CONFIG).model.state_dict()["fc.weight"])

    import training.train

    save = training.train.save_checkpoint

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise Stop

    monkeypatch.setattr(training.train, "save_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        run(cosine, checkpoint_dir=tmp_path)
    monkeypatch.setattr(training.train, "save_checkpoint", save)
    with pytest.raises(ValueError, match=r"different run \(epochs: checkpoint 2, now 3"):
        run(cosine.replace(epochs=3), checkpoint_dir=tmp_path, resume=True)
    # The second epoch's steps take their rates from where the schedule stood: the same weights.
    resumed = run(cosine, init_seed=5, checkpoint_dir=tmp_path, resume=True)
    assert_same_state(resumed.model.state_dict(), straight.model.state_dict())


def test_learning_rate_schedules():
    step = CONFIG.replace(lr=0.1, lr_decay_epoch=2, lr_decay_factor=0.1, epochs=4)
    assert [learning_rate(step, t) for t in (0, 1.99, 2, 3.5)] == [0.1, 0.1, pytest.approx(0.01), pytest.approx(0.01)]
    cosine = step.replace(lr_schedule="cosine")
    assert [learning_rate(cosine, t) for t in (0, 1, 2, 3, 4)] == pytest.approx(
        [0.1, 0.1 * (1 + np.cos(np.pi / 4)) / 2, 0.05, 0.1 * (1 - np.cos(np.pi / 4)) / 2, 0.0])
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        CONFIG.replace(lr_schedule="linear")


def test_bare_patch_batches_know_their_place_in_the_epoch():
    from training.batches import patch_batches
    from training.distributed import DistContext

    ctx = DistContext.single(CPU)
    for samples, expected in ((16, [8, 8]), (17, [8, 8]), (18, [8, 8, 2])):  # a lone patch is no BatchNorm batch
        batches = list(patch_batches(TRAIN, CONFIG.replace(samples_per_epoch=samples), np.random.default_rng(0), ctx))
        assert [len(b.labels) for b in batches] == expected
        assert [(b.step, b.steps) for b in batches] == [(i, len(expected)) for i in range(len(expected))]


def test_holdout_every_leaves_training_alone(straight, tmp_path):
    result, _, _ = straight
    sparse = run(CONFIG.replace(holdout_every=5))
    assert_same_state(sparse.model.state_dict(), result.model.state_dict())
    assert [r["holdout_mean_auc"] is None for r in sparse.history] == [True, False]  # the last epoch is always
    assert all(r["holdout_mean_auc"] is not None for r in result.history)
    # best_holdout chooses among the evaluated epochs only.
    assert run(CONFIG.replace(holdout_every=5, select_epoch="best_holdout")).best_epoch == 1
    # It changes no weights, but under best_holdout it decides which epochs compete: a checkpoint holds to it.
    best = CONFIG.replace(select_epoch="best_holdout", epochs=1)
    run(best, checkpoint_dir=tmp_path)
    assert load_checkpoint(tmp_path, config=best.replace(epochs=2)) is not None
    with pytest.raises(ValueError, match=r"different run \(holdout_every: checkpoint 1, now 2"):
        load_checkpoint(tmp_path, config=best.replace(epochs=2, holdout_every=2))
    assert load_checkpoint(tmp_path, config=best.replace(select_epoch="last", holdout_every=2)) is not None
    with pytest.raises(ValueError, match="holdout_every must be a whole number"):
        CONFIG.replace(holdout_every=0)


def test_learning_curves_plot(straight, tmp_path):
    result, _, _ = straight
    path = plot_learning_curves(result.history, tmp_path / "plots" / "curves.png", title="t",
                                best_epoch=result.best_epoch)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (600, 400)
    with pytest.raises(ValueError, match="empty"):
        plot_learning_curves([], tmp_path / "none.png", title="t")
