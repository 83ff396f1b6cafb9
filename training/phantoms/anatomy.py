"""Breast outline, parenchyma, skin line and pectoral muscle of one view.

Everything is drawn in a canonical orientation, chest wall on the left
(x = 0); right breasts are mirrored afterwards. Intensities are floats where
0 is background and 1 full brightness (dense tissue is bright).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training.phantoms.texture import power_law_noise


@dataclass(frozen=True)
class Anatomy:
    """The lesion-free image of one view and the masks needed to place lesions."""

    tissue: np.ndarray  # float32 intensity, background included
    breast: np.ndarray  # bool
    pectoral: np.ndarray  # bool, all False on CC views
    skin: np.ndarray  # bool, the band along the outline that the skin line occupies
    nipple: tuple[float, float]  # (x, y) in pixels


def build_anatomy(view: str, *, height: int, width: int, beta: float, rng: np.random.Generator) -> Anatomy:
    """Draw the breast of one view; ``view`` "MLO" adds a pectoral muscle, anything else is CC-like."""
    mlo = view == "MLO"
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    breast, nipple = _outline(xs, ys, mlo=mlo, height=height, width=width, rng=rng)

    # Distance to the skin. Only the curved outline is skin: the chest wall
    # (left edge) and, on MLO views, the axilla (top edge) continue outside the
    # image, and the distance transform treats the image border as tissue.
    edge = ndimage.distance_transform_edt(breast).astype(np.float32)

    # Compressed breast: thickness, hence attenuation, falls off over the last
    # few centimetres before the skin (a quarter-circle profile).
    rim = np.clip(edge / (0.09 * width), 0.0, 1.0)
    thickness = np.sqrt(1.0 - (1.0 - rim) ** 2)
    fat = 0.15 + 0.15 * thickness

    # Fibroglandular tissue: thresholded 1/f^beta noise, stretched along lines
    # that converge on the nipple (the ducts do), denser near the chest wall
    # and absent from the subcutaneous fat layer under the skin.
    structure = _radial_texture((height, width), nipple, beta=beta, rng=rng)
    depth = np.clip(xs / max(nipple[0], 1.0), 0.0, 1.0)
    subcutaneous = np.clip((edge - 0.03 * width) / (0.08 * width), 0.0, 1.0)
    weight = subcutaneous * (1.0 - 0.55 * depth)
    threshold = rng.uniform(-0.5, 0.7)  # breast density: lower means denser
    glands = 1.0 / (1.0 + np.exp(-(structure - threshold) / 0.45))
    grain = power_law_noise((height, width), beta=1.5, rng=rng)
    tissue = fat + rng.uniform(0.26, 0.34) * weight * glands + 0.012 * grain

    # Skin line: a thin brighter rim along the outline.
    skin_width = max(1.0, 0.0035 * height)
    tissue += 0.14 * np.clip(skin_width + 1.0 - edge, 0.0, 1.0)
    skin = breast & (edge <= max(2.0, 0.006 * height))

    pectoral = np.zeros_like(breast)
    if mlo:
        tissue, pectoral = _pectoral(tissue, xs, ys, breast, width=width, height=height, rng=rng)
    tissue = np.where(breast, tissue, 0.0).astype(np.float32)
    return Anatomy(tissue=tissue, breast=breast, pectoral=pectoral, skin=skin, nipple=nipple)


def _radial_texture(
    shape: tuple[int, int],
    nipple: tuple[float, float],
    *,
    beta: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Power-law noise resampled in polar coordinates centred beyond the nipple.

    Sampling a noise field at (angle * R, distance / stretch) elongates its
    structures radially, so they fan out from the nipple towards the chest
    wall as ducts and Cooper's ligaments do. The centre lies outside the
    breast so that the fan has no visible singularity. A 1/f^3 spectrum has
    little fine detail, so the field is drawn and sampled at half resolution
    and then interpolated up. Zero mean, roughly unit std.
    """
    height, width = shape
    stretch = 2.0
    centre_x, centre_y = nipple[0] + 0.35 * width, nipple[1]
    reference = 0.8 * width  # radius at which the angular scale is preserved
    ys, xs = np.mgrid[0:height:2, 0:width:2].astype(np.float32)
    distance = np.hypot(xs - centre_x, ys - centre_y)
    angle = np.arctan2(ys - centre_y, centre_x - xs)  # 0 along the axis to the chest wall
    rows = 0.5 * (angle + np.pi / 2) * reference
    cols = 0.5 * distance / stretch
    side = int(np.ceil(max(rows.max(), cols.max()))) + 2
    field = power_law_noise((side, side), beta=beta, rng=rng, knee=4.0 / width)
    sampled = ndimage.map_coordinates(field, [rows, cols], order=1, mode="mirror")
    zoom = (height / sampled.shape[0], width / sampled.shape[1])
    return ndimage.zoom(sampled, zoom, order=1).astype(np.float32, copy=False)


def _outline(
    xs: np.ndarray, ys: np.ndarray, *, mlo: bool, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float]]:
    """Breast mask and nipple position.

    The outline is an egg-shaped half ellipse around a point on (or, for MLO,
    just behind) the chest wall, with different upper and lower half-heights
    and a little low-frequency wobble. On MLO views it is tilted downwards and
    runs off the top edge into the axilla.
    """
    if mlo:
        cx = -0.05 * width
        cy = rng.uniform(0.40, 0.46) * height
        reach = rng.uniform(0.86, 0.95) * width
        upper = rng.uniform(0.56, 0.66) * height
        lower = rng.uniform(0.44, 0.51) * height
        tilt = rng.uniform(0.05, 0.15)  # radians, nipple points slightly down
    else:
        cx = 0.0
        cy = rng.uniform(0.47, 0.53) * height
        reach = rng.uniform(0.80, 0.90) * width
        upper = rng.uniform(0.39, 0.45) * height
        lower = rng.uniform(0.39, 0.45) * height
        tilt = rng.uniform(-0.04, 0.04)
    dx, dy = xs - cx, ys - cy
    cos_t, sin_t = np.cos(tilt), np.sin(tilt)
    u = dx * cos_t + dy * sin_t  # along the nipple axis
    v = -dx * sin_t + dy * cos_t  # across it, positive downwards
    angle = np.arctan2(v, u)
    harmonics = [(k, rng.uniform(0.0, 0.015), rng.uniform(0, 2 * np.pi)) for k in range(2, 6)]
    # Tabulated over the angle: interpolating is much cheaper than cosines per pixel.
    table = np.linspace(-np.pi, np.pi, 2049)
    wobble_table = 1.0 + sum(a * np.cos(k * table + phase) for k, a, phase in harmonics)
    wobble = np.interp(angle, table, wobble_table).astype(np.float32)
    half = np.where(v < 0, upper, lower)
    breast = ((u / reach) ** 2 + (v / half) ** 2) <= wobble**2
    # The nipple is where the axis (angle 0) meets the outline.
    tip = reach * (1.0 + sum(a * np.cos(phase) for _, a, phase in harmonics))
    nipple = (min(cx + tip * cos_t, width - 1.0), cy + tip * sin_t)
    return breast, nipple


def _pectoral(
    tissue: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    breast: np.ndarray,
    *,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Add the pectoral muscle: a bright wedge in the upper chest-wall corner.

    Its edge runs from (x_top, 0) to (0, y_side), bowed slightly towards the
    breast, as the muscle's convex border looks on MLO views.
    """
    x_top = rng.uniform(0.28, 0.40) * width
    y_side = rng.uniform(0.38, 0.55) * height
    bulge = rng.uniform(0.02, 0.06) * width
    t = np.clip(ys / y_side, 0.0, 1.0)
    border = np.where(ys <= y_side, x_top * (1.0 - t) + bulge * np.sin(np.pi * t), -1.0)
    # Soft over about 1.5 px so the border is not a staircase.
    alpha = np.clip((border - xs) / 1.5 + 0.5, 0.0, 1.0) * breast
    fibres = power_law_noise(tissue.shape, beta=2.5, rng=rng)
    level = rng.uniform(0.60, 0.68)
    muscle = level + 0.08 * np.clip(1.0 - xs / np.maximum(border, 1.0), 0.0, 1.0) + 0.025 * fibres
    blended = tissue * (1.0 - alpha) + np.maximum(tissue, muscle) * alpha
    return blended.astype(np.float32), (alpha >= 0.5) & breast
