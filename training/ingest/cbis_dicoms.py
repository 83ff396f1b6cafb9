"""CBIS-DDSM's DICOM tree: the folders by name, a full image's file and an abnormality's ROI mask.

The rules they follow are in :mod:`training.ingest.cbis_ddsm`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepminer.dicom import read_dicom_info
from deepminer.imaging import ImageDecodeError, read_image

log = logging.getLogger(__name__)

FOLDER_PATTERN = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$")
"""CBIS-DDSM folder names: full image, or ``_<abnormality id>`` for its ROI mask and crop."""


def index_folders(root: Path) -> dict[str, Path]:
    """Map each CBIS-DDSM folder name under ``root`` to its path (the walk stops at those folders)."""
    index: dict[str, Path] = {}
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc)
            continue
        for child in children:
            if FOLDER_PATTERN.match(child.name):
                index.setdefault(child.name, child)
            else:
                stack.append(child)
    return index


def find_roi_mask(candidates: Sequence[Path], image_shape: tuple[int, int]) -> Path | None:
    """The ROI mask among an abnormality's DICOMs (rule in the module docstring), or None."""
    full_size = [p for p in candidates if _safe_shape(p) == image_shape]
    if len(full_size) == 1:
        return full_size[0]
    pool = full_size or list(candidates)
    binary = [p for p in pool if _is_binary(p)]
    if len(binary) == 1:
        return binary[0]
    return None


def dicoms(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def full_image(image_id: str, folders: dict[str, Path]) -> Path | None:
    folder = folders.get(image_id)
    files = dicoms(folder) if folder is not None else []
    if len(files) > 1:
        log.warning("%s holds %d DICOM files; taking the largest image", folder, len(files))
        return max(files, key=_area)
    return files[0] if files else None


def _area(path: Path) -> int:
    shape = _safe_shape(path)
    return shape[0] * shape[1] if shape is not None else -1


def _safe_shape(path: Path) -> tuple[int, int] | None:
    try:
        return dicom_shape(path)
    except ImageDecodeError as exc:
        log.warning("cannot read the DICOM header of %s: %s", path, exc)
        return None


def dicom_shape(path: Path) -> tuple[int, int]:
    info = read_dicom_info(path)
    if info.rows is None or info.columns is None:
        raise ImageDecodeError(f"{path}: DICOM without Rows/Columns")
    return info.rows, info.columns


def _is_binary(path: Path) -> bool:
    try:
        values = np.unique(read_image(path))
    except ImageDecodeError as exc:
        log.warning("cannot decode %s: %s", path, exc)
        return False
    return len(values) <= 2 and values[0] == 0.0
