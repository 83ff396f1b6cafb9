"""A unit's top hold-out patches: how they are drawn (Lu & Perer masks) and the bundle's table of them.

One implementation for both sides: the build (:mod:`training.visualise`)
renders the ranked units' patches into the bundle with these functions, and
the service renders any other unit's patches on demand with the same ones,
from the hold-out images the table :class:`TopPatchTable` points at.

The table (``units/top_patches.npz``) lists, for *every* layer4 unit, its top
``n`` hold-out patches (image, box in image pixels, the unit's largest
activation on the patch) and the threshold its masks are binarised at. It
holds no pixels: 2048 units × 24 patches are about 0.3 MiB (benchmarks/unit_patches.py), where rendered
PNGs for every unit would be hundreds of megabytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepminer.formulas import binarise
from deepminer.grid import GridMapping, upsample
from deepminer.imaging import resize

TOP_PATCHES_FILE = "units/top_patches.npz"
"""The bundle's table of every unit's top hold-out patches (optional: older bundles lack it)."""
CONTEXT_HEIGHT = 256
"""Largest height of the downscaled source mammograms."""
DIM = 0.25
"""Brightness kept outside a unit's mask (Lu & Perer dim the rest of the patch rather than hide it)."""
PATCH_STORAGE = np.float16
"""The precision hold-out patches had when the build scored them (``training.data.PatchSet``); a patch rendered
later is rounded the same way so it activates the unit as it did then."""


def crop_patch(pixels: np.ndarray, top: int, left: int, side: int, size: int) -> np.ndarray:
    """The square window ``[top, top + side) × [left, left + side)`` resized to ``size`` × ``size``."""
    return resize(pixels[top : top + side, left : left + side], (size, size))


def unit_mask(response: np.ndarray, patch_size: int, threshold: float) -> np.ndarray:
    """The unit's ``(h, w)`` map on a patch, upsampled to ``patch_size`` × ``patch_size`` and binarised."""
    mapping = GridMapping.for_input(image_shape=(patch_size, patch_size), input_shape=(patch_size, patch_size))
    return binarise(upsample(response, mapping), threshold)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Grayscale in [0, 1] → 8-bit."""
    return np.clip(np.rint(pixels.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def dim_outside(pixels: np.ndarray, mask: np.ndarray, dim: float = DIM) -> np.ndarray:
    """8-bit patch with everything outside ``mask`` scaled by ``dim``."""
    return to_uint8(np.where(mask, pixels.astype(np.float32), dim * pixels.astype(np.float32)))


def context_shape(height: int, width: int, context_height: int = CONTEXT_HEIGHT) -> tuple[int, int]:
    """The downscaled mammogram's ``(height, width)``: at most ``context_height`` high, aspect kept."""
    out_h = min(context_height, height)
    return out_h, max(1, round(width * out_h / height))


def context_box(top: int, left: int, side: int, *, scale: tuple[float, float]) -> dict[str, float]:
    """Where a patch lies on the context image, ``scale`` = (rows, columns) of context per source pixel."""
    sy, sx = scale
    return {
        "top": round(top * sy, 2),
        "left": round(left * sx, 2),
        "height": round(side * sy, 2),
        "width": round(side * sx, 2),
    }


@dataclass(frozen=True)
class TopPatchTable:
    """Every unit's top hold-out patches by reference; row k is unit k, best patch first.

    ``patch[k, j]`` indexes ``boxes``/``image`` (-1 where unit k has fewer
    patches; its ``activation`` is then -inf). ``image[i]`` indexes
    ``image_ids``/``image_paths``/``image_shapes``. ``image_paths`` are
    relative to the folder of the manifest the bundle was built from (absolute
    for an image outside it), so the images can be moved as one folder.
    ``threshold`` is each unit's mask threshold, from ``threshold_source``.
    """

    activation: np.ndarray  # (K, n) float32
    patch: np.ndarray  # (K, n) int32
    threshold: np.ndarray  # (K,) float32
    threshold_source: str
    boxes: np.ndarray  # (N, 3) int32: top, left, side in source image pixels
    image: np.ndarray  # (N,) int32
    image_ids: tuple[str, ...]
    image_paths: tuple[str, ...]
    image_shapes: np.ndarray  # (M, 2) int32: height, width

    def __post_init__(self) -> None:
        k, n = self.activation.shape
        if self.patch.shape != (k, n) or self.threshold.shape != (k,):
            raise ValueError(
                f"activation {self.activation.shape}, patch {self.patch.shape} and threshold {self.threshold.shape} "
                "must be (K, n), (K, n) and (K,)"
            )
        m = len(self.image_ids)
        paths, shapes = len(self.image_paths), self.image_shapes.shape
        if self.boxes.shape != (self.image.shape[0], 3) or paths != m or shapes != (m, 2):
            raise ValueError(
                f"boxes {self.boxes.shape}, image {self.image.shape}, {m} image ids, {paths} paths "
                f"and shapes {shapes} do not fit together"
            )

    @property
    def num_units(self) -> int:
        return int(self.activation.shape[0])

    def save(self, path: Path) -> None:
        """Write the table as an ``.npz`` without pickled objects (strings are fixed-width unicode arrays)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh,
                activation=self.activation.astype(np.float32),
                patch=self.patch.astype(np.int32),
                threshold=self.threshold.astype(np.float32),
                threshold_source=np.asarray(self.threshold_source),
                boxes=self.boxes.astype(np.int32),
                image=self.image.astype(np.int32),
                image_ids=np.asarray(self.image_ids, dtype=str),
                image_paths=np.asarray(self.image_paths, dtype=str),
                image_shapes=self.image_shapes.astype(np.int32),
            )

    @classmethod
    def load(cls, path: Path) -> TopPatchTable:
        """Read a table :meth:`save` wrote; ValueError naming the file when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                return cls(
                    activation=npz["activation"],
                    patch=npz["patch"],
                    threshold=npz["threshold"],
                    threshold_source=str(npz["threshold_source"]),
                    boxes=npz["boxes"].reshape(-1, 3),
                    image=npz["image"],
                    image_ids=tuple(str(s) for s in npz["image_ids"]),
                    image_paths=tuple(str(s) for s in npz["image_paths"]),
                    image_shapes=npz["image_shapes"].reshape(-1, 2),
                )
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{path} is not a table of top patches: {exc}") from None
