"""Top patches of units outside the ranked set, rendered on demand from the hold-out images.

The build renders PNGs for the ranked units only (``units/index.json``), but
lists every unit's top hold-out patches by reference in
``units/top_patches.npz`` (:class:`deepminer.unit_patches.TopPatchTable`).
For any other unit this module crops those patches from the hold-out
mammograms, runs them through the loaded backend for the unit's layer4 map and
masks them with the build's own functions, so the experts see what they would
have seen had the unit been ranked.

The images are read from ``DEEPMINER_HOLDOUT_IMAGES_DIR`` or, unset, from the
folder the bundle was built from (``meta.json``
``unit_visualisation.top_patches.images_root``). Where an image cannot be read
there, or is not the image the build saw (another size), its patches are
still listed (image, box, activation) but without pictures, and the result
says why. Complete renders are kept in a small in-memory LRU cache.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
from PIL import Image

from deepminer.bundle import Bundle, BundleError
from deepminer.imaging import ImageDecodeError, normalise, read_image, resize
from deepminer.unit_patches import (
    PATCH_STORAGE,
    TOP_PATCHES_FILE,
    TopPatchTable,
    context_box,
    context_shape,
    crop_patch,
    dim_outside,
    to_uint8,
    unit_mask,
)
from service.errors import InferenceCancelledError, NotInBundleError
from service.inference import InferenceEngine

CACHE_UNITS: Final = 16
"""Rendered units kept in memory: a unit's 24 patches, masks and contexts are a few hundred kB of PNG."""
PatchKind = Literal["patch", "masked", "context"]
PATCH_KINDS: Final[tuple[PatchKind, ...]] = ("patch", "masked", "context")


@dataclass(frozen=True)
class PatchView:
    """One of a unit's top patches; ``mask_fraction`` and ``context_box`` are None when its image is unavailable."""

    rank: int
    activation: float
    image_id: str
    box: Mapping[str, int]
    mask_fraction: float | None
    context_box: Mapping[str, float] | None

    @property
    def has_images(self) -> bool:
        return self.mask_fraction is not None


@dataclass(frozen=True)
class RenderedUnit:
    """A unit's top patches as rendered now: the views, their PNGs by ``(rank, kind)``, and what was missing."""

    unit_id: int
    threshold: float
    threshold_source: str
    thresholds: Mapping[str, float]  # by source: the one the masks use, and the ranking's whole-mammogram one
    patches: tuple[PatchView, ...]
    pngs: Mapping[tuple[int, str], bytes]
    unavailable: Mapping[str, str]  # image id -> why it could not be used

    @property
    def images_available(self) -> bool:
        return not self.unavailable

    def png(self, rank: int, kind: PatchKind) -> bytes:
        """One of its PNGs, or :class:`NotInBundleError` saying why there is none."""
        found = self.pngs.get((rank, kind))
        if found is not None:
            return found
        if not 1 <= rank <= len(self.patches):
            why = f"the unit has {len(self.patches)} top patches"
        else:
            why = self.unavailable.get(self.patches[rank - 1].image_id, "its hold-out image is unavailable")
        raise NotInBundleError(f"no {kind} image for patch {rank} of unit {self.unit_id}: {why}", field="rank")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class UnitPatchRenderer:
    """Renders any unit's top patches from the bundle's table and the hold-out images; thread-safe."""

    def __init__(
        self, *, bundle: Bundle, engine: InferenceEngine, images_dir: Path | None, cache_units: int = CACHE_UNITS
    ) -> None:
        self.bundle = bundle
        self.engine = engine
        self.table: TopPatchTable | None = None
        self.images_root: Path | None = images_dir
        if bundle.has(TOP_PATCHES_FILE):
            try:
                self.table = TopPatchTable.load(bundle.path(TOP_PATCHES_FILE))
            except ValueError as exc:
                raise BundleError(f"{exc}; rebuild the bundle") from None
            if self.table.num_units != bundle.num_units:
                raise BundleError(
                    f"{TOP_PATCHES_FILE} lists {self.table.num_units} units, the model has {bundle.num_units}; "
                    "rebuild the bundle"
                )
            if images_dir is None:
                recorded = bundle.meta.get("unit_visualisation", {}).get("top_patches", {}).get("images_root")
                self.images_root = None if recorded is None else Path(recorded)
        self.patch_size = int(bundle.meta["preprocessing"]["patch_size"])
        self.cache_units = cache_units
        self._cache: OrderedDict[int, RenderedUnit] = OrderedDict()
        self._lock = threading.Lock()

    def _table(self) -> TopPatchTable:
        if self.table is None:
            raise NotInBundleError(
                f"bundle {self.bundle.id} lists no top patches for units outside its ranked set ({TOP_PATCHES_FILE}); "
                "rebuild it with `python -m training` to see them",
                field="unit_id",
            )
        return self.table

    def cached(self, unit_id: int) -> RenderedUnit | None:
        """The unit's render if it is in the cache (and marks it recently used), else None; never blocks on work."""
        with self._lock:
            found = self._cache.get(unit_id)
            if found is not None:
                self._cache.move_to_end(unit_id)
            return found

    def _image_path(self, stored: str) -> Path | None:
        path = Path(stored)
        if path.is_absolute():
            return path
        return None if self.images_root is None else self.images_root / path

    def _read(self, index: int) -> np.ndarray | str:
        """The hold-out image ``index`` of the table, or why it cannot be used."""
        table = self._table()
        path = self._image_path(table.image_paths[index])
        if path is None:
            return "the bundle records no folder for the hold-out images and DEEPMINER_HOLDOUT_IMAGES_DIR is not set"
        if not path.is_file():
            return f"{path} not found"
        try:
            pixels = read_image(path)
        except (ImageDecodeError, OSError) as exc:
            return f"{path} cannot be read: {exc}"
        expected = tuple(int(v) for v in table.image_shapes[index])
        if pixels.shape != expected:
            return (
                f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels, the build's image was "
                f"{expected[1]}x{expected[0]}"
            )
        return pixels

    def render(self, unit_id: int, *, cancel: threading.Event | None = None) -> RenderedUnit:
        """The unit's top patches, from the cache or rendered now (blocking: image reads and one forward pass).

        ``cancel``, when set between images, stops the work (:class:`InferenceCancelledError`).
        """
        found = self.cached(unit_id)
        if found is not None:
            return found
        table = self._table()
        threshold = float(table.threshold[unit_id])
        columns = [(col, int(j)) for col, j in enumerate(table.patch[unit_id]) if j >= 0]
        # One mammogram in memory at a time (a DICOM can be ~100 MB as float32): its crops and context, then the next.
        crops: dict[int, np.ndarray] = {}  # column -> patch pixels
        contexts: dict[int, tuple[bytes, tuple[float, float]]] = {}  # image -> context PNG, (row, column) scale
        unavailable: dict[str, str] = {}
        for image in dict.fromkeys(int(table.image[j]) for _, j in columns):
            if cancel is not None and cancel.is_set():
                raise InferenceCancelledError(f"rendering unit {unit_id}'s top patches was abandoned")
            pixels = self._read(image)
            if isinstance(pixels, str):
                unavailable[table.image_ids[image]] = pixels
                continue
            for col, j in columns:
                if int(table.image[j]) == image:
                    top, left, side = (int(v) for v in table.boxes[j])
                    patch = crop_patch(pixels, top, left, side, self.patch_size)
                    crops[col] = patch.astype(PATCH_STORAGE).astype(np.float32)  # as the build held it when scoring
            height, width = pixels.shape
            shape = context_shape(height, width)
            contexts[image] = (_png(to_uint8(resize(pixels, shape))), (shape[0] / height, shape[1] / width))
        maps = dict(zip(crops, self._unit_maps(list(crops.values()), unit_id))) if crops else {}
        pngs: dict[tuple[int, str], bytes] = {}
        views = []
        for col, j in columns:
            rank, image = col + 1, int(table.image[j])
            top, left, side = (int(v) for v in table.boxes[j])
            box = {"top": top, "left": left, "side": side}
            activation = float(table.activation[unit_id, col])
            if col not in crops:
                views.append(PatchView(rank, activation, table.image_ids[image], box, None, None))
                continue
            mask = unit_mask(maps[col], self.patch_size, threshold)
            context_png, scale = contexts[image]
            pngs[(rank, "patch")] = _png(to_uint8(crops[col]))
            pngs[(rank, "masked")] = _png(dim_outside(crops[col], mask))
            pngs[(rank, "context")] = context_png
            views.append(
                PatchView(
                    rank=rank,
                    activation=activation,
                    image_id=table.image_ids[image],
                    box=box,
                    mask_fraction=float(mask.mean()),
                    context_box=context_box(top, left, side, scale=scale),
                )
            )
        rendered = RenderedUnit(
            unit_id=unit_id,
            threshold=threshold,
            threshold_source=table.threshold_source,
            thresholds={
                "ranking": float(self.bundle.rankings["unit_thresholds"][unit_id]),
                table.threshold_source: threshold,
            },
            patches=tuple(views),
            pngs=pngs,
            unavailable=unavailable,
        )
        if rendered.images_available:  # an image mounted later shows on the next request
            with self._lock:
                self._cache[unit_id] = rendered
                self._cache.move_to_end(unit_id)
                while len(self._cache) > self.cache_units:
                    self._cache.popitem(last=False)
        return rendered

    def _unit_maps(self, crops: list[np.ndarray], unit_id: int) -> list[np.ndarray]:
        """The unit's layer4 map ``(h, w)`` on each patch, from one batched forward pass of the loaded backend."""
        x = normalise(np.stack(crops), self.bundle.mean, self.bundle.std)
        aux = self.engine.reference_aux
        batch_aux = None if aux is None else np.repeat(aux[None, :], len(crops), axis=0)
        _, features = self.engine.backend.run_batch(x, batch_aux)
        return [features[i, unit_id] for i in range(len(crops))]
