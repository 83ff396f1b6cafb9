"""Patch sets cut from manifest images, held in memory as float16."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from deepminer.imaging import read_image
from training.manifest import ImageRecord
from training.patches import CLASSES, Box, PatchRule, crop_patch, label_boxes, sliding_boxes
from training.tissue import tissue_mask


@dataclass(frozen=True)
class PatchSet:
    """Patches ``(N, P, P)`` float16 in [0, 1], their class indices and where each came from."""

    pixels: np.ndarray
    labels: np.ndarray  # (N,) int64 indices into CLASSES
    image_ids: tuple[str, ...]
    boxes: tuple[Box, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        return {name: int(n) for name, n in zip(CLASSES, counts)}


def load_lesion_masks(record: ImageRecord, shape: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """``(pathology, mask)`` of every lesion of an image; masks must match the image's shape."""
    lesions = []
    for finding in record.lesions:
        mask = read_image(finding.mask_path) > 0.5
        if mask.shape != shape:
            raise ValueError(
                f"mask {finding.mask_path} is {mask.shape[1]}x{mask.shape[0]} but image "
                f"{record.image_id} is {shape[1]}x{shape[0]}"
            )
        assert finding.pathology is not None
        lesions.append((finding.pathology, mask))
    return lesions


def cut_patches(
    records: Sequence[ImageRecord],
    *,
    rule: PatchRule,
    patch_size: int,
    desc: str = "patches",
    progress: bool = True,
) -> PatchSet:
    """Apply the patch rule to every image and resize the kept windows to ``patch_size``."""
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    image_ids: list[str] = []
    boxes: list[Box] = []
    for record in tqdm(records, desc=desc, unit="img", disable=not progress):
        image = read_image(record.image_path)
        lesions = load_lesion_masks(record, image.shape)
        kept = label_boxes(sliding_boxes(*image.shape, rule), tissue_mask(image), lesions, rule)
        for box, label in kept:
            pixels.append(crop_patch(image, box, patch_size).astype(np.float16))
            labels.append(CLASSES.index(label))
            image_ids.append(record.image_id)
            boxes.append(box)
    stacked = np.stack(pixels) if pixels else np.zeros((0, patch_size, patch_size), dtype=np.float16)
    return PatchSet(stacked, np.asarray(labels, dtype=np.int64), tuple(image_ids), tuple(boxes))
