"""Breast-tissue masks: the patch rule's "at least 50% breast tissue" and the breast cells of an image score."""

from __future__ import annotations

import numpy as np


def otsu_threshold(pixels: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a [0, 1] image: the level that maximises between-class variance."""
    hist, edges = np.histogram(pixels, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_lo = np.cumsum(hist)
    weight_hi = weight_lo[-1] - weight_lo
    mass_lo = np.cumsum(hist * centres)
    mean_lo = np.divide(mass_lo, weight_lo, out=np.zeros_like(mass_lo), where=weight_lo > 0)
    mean_hi = np.divide(mass_lo[-1] - mass_lo, weight_hi, out=np.zeros_like(mass_lo), where=weight_hi > 0)
    between = weight_lo * weight_hi * (mean_lo - mean_hi) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def tissue_mask(pixels: np.ndarray) -> np.ndarray:
    """Boolean mask of breast tissue: pixels brighter than the Otsu threshold.

    Mammograms show tissue bright on a near-black background, so one global
    threshold separates them well; a tissue mask given with the data set wins
    over this estimate when the manifest provides one.
    """
    return pixels > otsu_threshold(pixels)
