"""Recipes: `paper` is exactly the paper and its reference code; the demo's deviations are named and recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepminer.fcn import build_classifier
from training.cli import build_parser, main
from training.config import DEMO_CONFIG, RECIPES, TrainConfig
from training.data import PatchSet
from training.patches import Box
from training.train import fine_tune


def test_paper_recipe_is_the_paper() -> None:
    paper = RECIPES["paper"]
    assert paper == TrainConfig()
    assert paper.recipe == "paper"
    assert (paper.lr, paper.momentum, paper.weight_decay, paper.batch_size, paper.epochs) == (1e-4, 0.9, 1e-4, 32, 5)
    assert (paper.lr_decay_epoch, paper.lr_decay_factor) == (4, 0.1)
    assert paper.optimiser == "sgd" and paper.score_rule == "breast_peak"
    assert not paper.balance_classes and not paper.augment_flips and not paper.augment_transpose
    assert paper.select_epoch == "last"
    assert paper.patch_context == "bare" and paper.reference_class is None and paper.train_precision == "fp32"
    assert paper.patch_rule.min_tissue == 0.5
    assert DEMO_CONFIG.recipe == "demo"


def test_recipe_sets_the_defaults_and_flags_win(tmp_path: Path) -> None:
    from training.cli import _config_from, _run_file

    argv = ["build", "--manifest", "m.csv", "--out", "b", "--recipe", "demo", "--epochs", "3"]
    run, recipe = _run_file(argv)
    args = build_parser(run, recipe).parse_args(argv)
    config = _config_from(args, recipe)
    assert config.recipe == "demo" and config.epochs == 3
    assert config.patch_context == DEMO_CONFIG.patch_context and config.lr == DEMO_CONFIG.lr
    argv = ["build", "--manifest", "m.csv", "--out", "b"]
    run, recipe = _run_file(argv)
    assert _config_from(build_parser(run, recipe).parse_args(argv), recipe) == TrainConfig()


def test_deep_resnet_without_imagenet_weights_is_refused(tmp_path: Path, capsys) -> None:
    code = main(["-q", "build", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "b"), "--depth", "50"])
    assert code == 2
    err = capsys.readouterr().err
    assert "ResNet-50 without --imagenet-weights" in err and "--from-scratch" in err


def test_unknown_values_are_refused() -> None:
    with pytest.raises(ValueError, match="select_epoch must be one of"):
        TrainConfig(select_epoch="best")
    with pytest.raises(ValueError, match="patch_context must be one of"):
        TrainConfig(patch_context="crop")


def _patches(n: int, seed: int) -> PatchSet:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    pixels = (rng.random((n, 32, 32)) * 0.2 + labels[:, None, None] * 0.3).astype(np.float16)
    return PatchSet(pixels, labels.astype(np.int64), tuple("x" for _ in range(n)), tuple(Box(0, 0, 32) for _ in range(n)))


def test_last_epoch_is_kept_by_the_paper_recipe() -> None:
    config = TrainConfig(depth=18, patch_size=32, epochs=3, batch_size=8, lr=0.01, device="cpu")
    result = fine_tune(build_classifier(depth=18, num_classes=3), _patches(24, 0), _patches(12, 1), config,
                       device=torch.device("cpu"), progress=False)
    assert result.best_epoch == 2
    assert [h["precision"] for h in result.history] == ["fp32"] * 3
