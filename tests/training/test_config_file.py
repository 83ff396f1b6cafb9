"""TOML run files: read, written, overridden by flags, recorded in the bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deepminer.bundle import load_bundle
from training import cli
from training.config import DEMO_CONFIG, TrainConfig
from training.config_file import CONFIG_FILE, read_run_file, to_toml, write_run_file
from training.patches import PatchRule

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(),
        DEMO_CONFIG,
        TrainConfig(
            name='odd "name" \\ with\nnewline, tab\t, ünïcode and \x7f', lr=1e-05, lr_decay_epoch=None,
            samples_per_epoch=None, split_fractions=(0.7, 0.2, 0.1), imagenet_weights=Path("/w/resnet152.pth"),
            balance_classes=False, threshold_quantile=0.995,
            patch_rule=PatchRule(side_fraction=0.2, min_tissue=0.6, priority=("malignant", "normal", "benign")),
        ),
    ],
)
def test_written_file_reads_back_to_the_same_config(tmp_path, config):
    path = write_run_file(tmp_path / "run.toml", config, build={"manifest": Path("/d/m.csv"), "auto_labels": True})
    tomllib.loads(path.read_text(encoding="utf-8"))  # valid TOML for any reader
    run = read_run_file(path)
    assert run.config == config
    assert run.build == {"manifest": Path("/d/m.csv"), "auto_labels": True}


def test_file_values_none_and_relative_paths(tmp_path):
    path = write(tmp_path, '''
        depth = 18
        lr = 1            # an integer is fine for a float
        lr_decay_epoch = "none"
        imagenet_weights = "weights/r18.pth"
        [patch_rule]
        stride_fraction = 0.25
        [build]
        manifest = "data/manifest.csv"
        checkpoint_dir = "/abs/ckpt"
        resume = true
    ''')
    run = read_run_file(path)
    assert run.config == TrainConfig(depth=18, lr=1.0, lr_decay_epoch=None, imagenet_weights=tmp_path / "weights/r18.pth",
                                     patch_rule=PatchRule(stride_fraction=0.25))
    assert run.build == {"manifest": tmp_path / "data/manifest.csv", "checkpoint_dir": Path("/abs/ckpt"), "resume": True}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate = 0.1", r"unknown TrainConfig fields: \['learning_rate'\]"),
        ("depth = 18.0", "depth must be int, got 18.0"),
        ("epochs = true", "epochs must be int, got True"),
        ('augment_flips = "yes"', "augment_flips must be bool"),
        ('depth = "none"', "depth must be int"),
        ("split_fractions = [0.8, 0.2]", "split_fractions must be 3 numbers"),
        ("[patch_rule]\nwindow = 3", r"unknown patch_rule fields: \['window'\]"),
        ("[build]\nmanifes = 'x.csv'", r"unknown \[build\] keys \['manifes'\]"),
        ("[build]\nresume = 1", "build.resume must be bool"),
        ("depth = ", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_with_the_key_named(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as exc:
        read_run_file(path)
    assert str(path) in str(exc.value)


def test_cli_flags_override_the_file(tmp_path, monkeypatch):
    calls = []

    def fake_build_bundle(manifest, out, config, **kwargs):
        calls.append((manifest, out, config, kwargs))
        return out

    import training.pipeline

    monkeypatch.setattr(training.pipeline, "build_bundle", fake_build_bundle)
    path = write(tmp_path, 'epochs = 7\nlr = 0.5\nmomentum = 0.5\ndevice = "cpu"\n'
                           '[build]\nmanifest = "m.csv"\nout = "b"\nauto_labels = true\n')
    assert cli.main(["-q", "build", "--config", str(path), "--epochs", "3", "--no-auto-labels",
                     "--checkpoint-dir", "ck", "--resume", "--from-scratch"]) == 0
    (manifest, out, config, kwargs) = calls[-1]
    assert config == TrainConfig(epochs=3, lr=0.5, momentum=0.5, device="cpu")  # flag > file > default
    assert (manifest, out) == (tmp_path / "m.csv", tmp_path / "b")
    assert kwargs["auto_label"] is False and kwargs["resume"] is True and kwargs["checkpoint_dir"] == Path("ck")

    assert cli.main(["-q", "build", "--config", str(tmp_path / "missing.toml")]) == 2
    assert cli.main(["-q", "build", "--manifest", "m.csv", "--out", "b", "--device", "cpu", "--from-scratch"]) == 0
    assert calls[-1][2] == TrainConfig(device="cpu") and calls[-1][3]["auto_label"] is False


def test_bundle_records_its_run_file_and_learning_curves(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    training = bundle.meta["training"]
    assert bundle.has(CONFIG_FILE) and training["run_file"] == CONFIG_FILE
    assert bundle.has("plots/learning_curves.png") and training["learning_curves"] == "plots/learning_curves.png"
    run = read_run_file(bundle.path(CONFIG_FILE))
    assert run.config == TrainConfig.from_dict(training["config"])
    assert run.config.to_dict() == training["config"]
    assert run.build["manifest"] == Path(bundle.meta["data"]["manifest"])
    assert run.build["auto_labels"] is True
    assert to_toml(run.config, build=run.build) == bundle.path(CONFIG_FILE).read_text(encoding="utf-8")
