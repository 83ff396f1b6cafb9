"""torchrun / DistributedDataParallel on CPU (gloo): two processes train exactly like one on the same global batch.

Run as a script (``torchrun ... tests/training/test_distributed.py OUT``) this
file is the worker: every rank fine-tunes the same tiny ResNet-18 on the same
synthetic patches and saves what it ends with to ``OUT/rank<r>.pt``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepminer.bundle import load_bundle
from deepminer.fcn import build_classifier
from training.config import TrainConfig
from training.data import PatchSet
from training.distributed import CrossProcessBatchNorm, DistContext, plain_batchnorm, sync_batchnorm
from training.patches import Box
from training.train import TrainResult, fine_tune

# 13 patches a global batch: the two ranks get 6 and 7, so the loss weighting of
# uneven slices is exercised. Two steps, so SGD momentum is exercised too. 64 px
# patches (a 2 x 2 layer4 grid) and lr 0.01 keep the run well-conditioned: at 32 px
# and lr 0.2 BatchNorm over 13 single-cell maps turned the kernels' summation order
# (it depends on the thread count) into differences of 1e-2 on some CPUs.
CONFIG = TrainConfig(
    name="ddp-check", depth=18, patch_size=64, epochs=1, batch_size=13, samples_per_epoch=26, lr=0.01,
    lr_decay_epoch=None, device="cpu", eval_batch_size=4,
)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def synthetic_patches(n: int, seed: int) -> PatchSet:
    rng = np.random.default_rng(seed)
    pixels = rng.random((n, CONFIG.patch_size, CONFIG.patch_size)).astype(np.float16)
    labels = np.arange(n, dtype=np.int64) % 3
    return PatchSet(pixels, labels, tuple(f"img{i}" for i in range(n)), tuple(Box(0, 0, 1) for _ in range(n)))


def train_once(dist: DistContext | None) -> tuple[dict[str, torch.Tensor], TrainResult]:
    """The initial weights and the result (its model: the only epoch's)."""
    torch.manual_seed(0)
    model = build_classifier(depth=CONFIG.depth, num_classes=3)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = fine_tune(model, synthetic_patches(40, 1), synthetic_patches(11, 2), CONFIG,
                       device=torch.device("cpu"), progress=False, dist=dist)
    return initial, result


def _worker(out: Path) -> None:
    from training.distributed import distributed_run

    torch.set_num_threads(1)
    with distributed_run("cpu") as dist:
        assert dist.is_distributed and dist.world_size == 2 and dist.backend == "gloo"
        _, result = train_once(dist)
        norms = sorted({type(m).__name__ for m in result.model.modules() if "Norm" in type(m).__name__})
        torch.save({"history": result.history, "state": result.model.state_dict(), "norms": norms},
                   out / f"rank{dist.rank}.pt")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_two_processes_match_one_on_the_same_global_batch(tmp_path):
    run = subprocess.run([*TORCHRUN, __file__, str(tmp_path)], env=_env(), capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    initial, result = train_once(None)
    single, history = result.model.state_dict(), result.history

    moved = max(float((single[k] - initial[k]).abs().max()) for k in single if single[k].is_floating_point())
    assert moved > 1e-2  # the steps did something the comparison can miss
    for rank in (0, 1):
        ddp = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert ddp["norms"] == ["BatchNorm2d"]  # synchronised BatchNorm swapped back after training
        assert set(ddp["state"]) == set(single)
        for name, expected in single.items():
            got = ddp["state"][name]
            if expected.is_floating_point():
                # BatchNorm running_mean / running_var included: synchronised statistics.
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"{name} on rank {rank}")
            else:
                assert torch.equal(got, expected), name  # num_batches_tracked
        (got_record,) = ddp["history"]
        (want_record,) = history
        assert got_record["world_size"] == 2 and want_record["world_size"] == 1
        assert got_record["train_loss"] == pytest.approx(want_record["train_loss"], rel=1e-5)
        # Hold-out predictions are sharded and gathered: the same model selection on every rank.
        assert got_record["holdout_auc"] == pytest.approx(want_record["holdout_auc"], abs=1e-6)


def test_lesion_crops_refuse_to_train_across_processes():
    ctx = DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), backend="gloo")
    config = TrainConfig(depth=18, patch_size=32, patch_context="image", lesion_crops=2, device="cpu")
    with pytest.raises(ValueError, match="lesion_crops trains in one process only"):
        fine_tune(build_classifier(depth=18, num_classes=3), synthetic_patches(4, 1), synthetic_patches(2, 2),
                  config, device=torch.device("cpu"), progress=False, dist=ctx)


def test_shards_cover_the_global_batch_in_order():
    idx = np.arange(100, 113)
    shards = [DistContext(rank=r, world_size=3, local_rank=r, device=torch.device("cpu"), backend="gloo").shard(idx)
              for r in range(3)]
    assert [len(s) for s in shards] in ([4, 5, 4], [4, 4, 5], [5, 4, 4])
    np.testing.assert_array_equal(np.concatenate(shards), idx)
    np.testing.assert_array_equal(DistContext.single(torch.device("cpu")).shard(idx), idx)


def test_batchnorm_swap_keeps_weights_and_state_dict():
    torch.manual_seed(0)
    model = build_classifier(depth=18, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bn_param = model.bn1.weight
    sync_batchnorm(model)
    assert isinstance(model.bn1, CrossProcessBatchNorm) and model.bn1.weight is bn_param
    assert model.state_dict().keys() == before.keys()
    # Without a process group it is plain BatchNorm.
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        synced_out = model(x)
    plain_batchnorm(model)
    assert type(model.bn1) is torch.nn.BatchNorm2d and model.bn1.weight is bn_param
    assert not any(isinstance(m, CrossProcessBatchNorm) for m in model.modules())
    model.load_state_dict(before)
    with torch.no_grad():
        torch.testing.assert_close(model(x), synced_out)


@pytest.mark.slow
def test_torchrun_build_writes_a_loadable_bundle(tmp_path, phantom_manifest):
    out = tmp_path / "bundle"
    run_file = tmp_path / "run.toml"
    run_file.write_text('depth = 18\npatch_size = 32\nlr = 0.01\nlr_decay_epoch = "none"\ndevice = "cpu"\n'
                        f'[build]\nmanifest = {json.dumps(str(phantom_manifest))}\n')
    cmd = [*TORCHRUN, "-m", "training", "-q", "build", "--config", str(run_file), "--out", str(out),
           "--name", "tiny-ddp", "--epochs", "2", "--batch-size", "32", "--samples-per-epoch", "64",
           "--checkpoint-dir", str(tmp_path / "ckpt")]
    run = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("wrote bundle") == 1  # rank 0 only
    bundle = load_bundle(out)
    training = bundle.meta["training"]
    assert training["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert [r["world_size"] for r in training["history"]] == [2, 2]
    assert training["config"]["epochs"] == 2 and training["config"]["depth"] == 18
    for name in ("config.toml", "plots/learning_curves.png", "plots/roc.png", "weights.pt", "fcn.onnx"):
        assert bundle.has(name), name
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    assert not out.with_name(out.name + ".partial").exists()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
