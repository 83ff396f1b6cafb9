"""Patch sets cut from manifest images, held in memory as float16."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from deepminer.auxiliary import aux_vector
from deepminer.grid import resized_shape
from deepminer.imaging import read_image, resize
from deepminer.tissue import tissue_mask
from training.context import PATCH_CONTEXTS, ImageContext
from training.manifest import ImageRecord
from training.patches import CLASSES, Box, PatchRule, crop_patch, label_boxes, sliding_boxes

log = logging.getLogger(__name__)
MASK_ASPECT_TOLERANCE = 0.02
"""Largest relative aspect-ratio difference between a mask and its image that resizing may absorb."""


@dataclass(frozen=True)
class PatchSet:
    """Patches ``(N, P, P)`` float16 in [0, 1], their class indices and where each came from.

    ``aux``: each patch's raw auxiliary features ``(N, J)`` float32 (its case's
    values, in the order asked for), or None when the model takes none.
    ``context``: the patches' images at network-input scale and where each
    patch lies in them (:mod:`training.context`), or None for bare patches.
    """

    pixels: np.ndarray
    labels: np.ndarray  # (N,) int64 indices into CLASSES
    image_ids: tuple[str, ...]
    boxes: tuple[Box, ...]
    aux: np.ndarray | None = None
    context: ImageContext | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        return {name: int(n) for name, n in zip(CLASSES, counts)}


def load_lesion_masks(record: ImageRecord, shape: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """``(pathology, mask)`` of every lesion of an image, each a boolean array of the image's ``shape``.

    A mask is its pixels above half its own maximum, so 0/255, 0/1 and 0/65535
    masks all work. A mask of another size (it happens in CBIS-DDSM) is resized
    nearest-neighbour to the image, with a warning; a ValueError refuses one
    whose aspect ratio differs from the image's by more than 2%.
    """
    lesions = []
    for finding in record.lesions:
        pixels = read_image(finding.mask_path)
        mask = pixels > 0.5 * float(pixels.max()) if pixels.max() > 0 else np.zeros(pixels.shape, dtype=bool)
        if mask.shape != shape:
            mask = _resize_mask(mask, shape, finding.mask_path, record.image_id)
        assert finding.pathology is not None
        lesions.append((finding.pathology, mask))
    return lesions


def _resize_mask(mask: np.ndarray, shape: tuple[int, int], path: object, image_id: str) -> np.ndarray:
    (mh, mw), (h, w) = mask.shape, shape
    if abs((mw / mh) / (w / h) - 1.0) > MASK_ASPECT_TOLERANCE:
        raise ValueError(
            f"mask {path} is {mw}x{mh} but image {image_id} is {w}x{h}: aspect ratios differ by more than "
            f"{MASK_ASPECT_TOLERANCE:.0%}, so the mask cannot be resized onto the image"
        )
    log.warning("mask %s is %dx%d but image %s is %dx%d; resized nearest-neighbour", path, mw, mh, image_id, w, h)
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(resized) > 127


def cut_patches(
    records: Sequence[ImageRecord],
    *,
    rule: PatchRule,
    patch_size: int,
    desc: str = "patches",
    progress: bool = True,
    aux_features: Sequence[str] = (),
    patch_context: str = "bare",
    cell_weights: str = "centre",
) -> PatchSet:
    """Apply the patch rule to every image and resize the kept windows to ``patch_size``.

    ``aux_features``: names of the auxiliary features each patch carries from
    its image's record; a record without one raises ValueError.
    ``patch_context="image"`` also keeps every image scaled as the FCN sees it
    (short side 4 × ``patch_size``) and each patch's box in it, with ``cell_weights`` saying how a patch's
    layer4 cells are weighted (:func:`training.context.patch_cells`).
    """
    if patch_context not in PATCH_CONTEXTS:
        raise ValueError(f"patch_context must be one of {PATCH_CONTEXTS}, got {patch_context!r}")
    scaled_images: list[np.ndarray] = []
    image_index: list[int] = []
    scaled_boxes: list[tuple[int, int, int]] = []
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    image_ids: list[str] = []
    boxes: list[Box] = []
    aux: list[np.ndarray] = []
    for record in tqdm(records, desc=desc, unit="img", disable=not progress):
        values = aux_vector(record.aux, aux_features, owner=f"image {record.image_id!r}") if aux_features else None
        image = read_image(record.image_path)
        lesions = load_lesion_masks(record, image.shape)
        kept = label_boxes(sliding_boxes(*image.shape, rule), tissue_mask(image), lesions, rule)
        if patch_context == "image" and kept:
            scaled = resize(image, resized_shape(*image.shape, 4 * patch_size))
            ry, rx = scaled.shape[0] / image.shape[0], scaled.shape[1] / image.shape[1]
            scaled_images.append(scaled.astype(np.float16))
        for box, label in kept:
            if patch_context == "image":
                image_index.append(len(scaled_images) - 1)
                scaled_boxes.append((round(box.top * ry), round(box.left * rx), round(box.side * (ry + rx) / 2)))
            pixels.append(crop_patch(image, box, patch_size).astype(np.float16))
            labels.append(CLASSES.index(label))
            image_ids.append(record.image_id)
            boxes.append(box)
            if values is not None:
                aux.append(values)
    stacked = np.stack(pixels) if pixels else np.zeros((0, patch_size, patch_size), dtype=np.float16)
    aux_array = None
    if aux_features:
        aux_array = np.stack(aux) if aux else np.zeros((0, len(aux_features)), dtype=np.float32)
    context = None
    if patch_context == "image":
        context = ImageContext(
            images=tuple(scaled_images),
            image_index=np.asarray(image_index, dtype=np.int64),
            boxes=np.asarray(scaled_boxes, dtype=np.int64).reshape(-1, 3),
            cell_weights=cell_weights,
        )
    return PatchSet(stacked, np.asarray(labels, dtype=np.int64), tuple(image_ids), tuple(boxes), aux_array, context)
