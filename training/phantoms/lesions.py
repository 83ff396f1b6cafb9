"""Masses and calcification clusters, drawn in a small square patch around their centre.

A lesion is an additive intensity (denser tissue is brighter, and the texture
beneath stays visible, as in a projection image) plus the pixel mask of the
finding. The outline / speck layout comes from the finding's ``shape_seed``
and so is the same in every view; ``rotation`` lets views differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree

from training.phantoms.findings import FindingSpec


@dataclass(frozen=True)
class LesionPatch:
    """Intensity to add and mask, both square with the lesion centre in the middle."""

    intensity: np.ndarray  # float32, (2 * half + 1, 2 * half + 1)
    mask: np.ndarray  # bool, same shape

    @property
    def half(self) -> int:
        return int(self.intensity.shape[0]) // 2


def render_lesion(spec: FindingSpec, *, diameter: float, rotation: float, speck: float) -> LesionPatch:
    """Draw ``spec`` with the given diameter (px) and rotation (radians).

    ``speck`` is the typical radius (px) of a fine calcification; it scales
    with the image, not with the cluster.
    """
    if diameter < 2:
        raise ValueError(f"lesion diameter must be at least 2 px, got {diameter}")
    rng = np.random.default_rng(spec.shape_seed)
    radius = diameter / 2.0
    if spec.kind == "mass":
        shape, margin = spec.subtype
        return _mass(shape, margin, radius=radius, rotation=rotation, rng=rng)
    kind = spec.subtype[0]
    if kind == "vascular":
        return _vascular(radius=radius, rotation=rotation, speck=speck, rng=rng)
    if kind == "coarse popcorn":
        return _popcorn(radius=radius, rotation=rotation, rng=rng)
    return _fine_pleomorphic(radius=radius, rotation=rotation, speck=speck, rng=rng)


def _grid(half: int, rotation: float) -> tuple[np.ndarray, np.ndarray]:
    """Patch coordinates rotated into the lesion's frame."""
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    c, s = np.cos(rotation), np.sin(rotation)
    return xx * c + yy * s, -xx * s + yy * c


def _boundary(shape: str, margin: str, radius: float, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """Radius of the mass outline as a function of angle."""
    if shape == "oval":
        ratio = rng.uniform(0.55, 0.75)
        a, b = radius / np.sqrt(ratio), radius * np.sqrt(ratio)  # same area as the circle
        harmonics: list[tuple[int, float, float]] = []
    elif shape == "irregular":
        a = b = radius
        harmonics = [(k, rng.uniform(0.05, 0.14) * np.sqrt(2.0 / k), rng.uniform(0, 2 * np.pi)) for k in range(2, 8)]
    else:
        a = b = radius
        harmonics = [(k, rng.uniform(0.0, 0.03), rng.uniform(0, 2 * np.pi)) for k in (2, 3)]
    if margin == "indistinct":
        # Fine ragged detail on top of the shape; the blur does the rest.
        harmonics += [(k, rng.uniform(0.0, 0.04), rng.uniform(0, 2 * np.pi)) for k in range(9, 16)]

    def outline(theta: np.ndarray) -> np.ndarray:
        base = 1.0 / np.sqrt((np.cos(theta) / a) ** 2 + (np.sin(theta) / b) ** 2)
        wobble = 1.0 + sum(amp * np.cos(k * theta + phase) for k, amp, phase in harmonics)
        return base * np.maximum(wobble, 0.45)

    return outline


def _mass(shape: str, margin: str, *, radius: float, rotation: float, rng: np.random.Generator) -> LesionPatch:
    """A dense dome with a sharp (circumscribed), blurred (indistinct) or spiculated edge."""
    outline = _boundary(shape, margin, radius, rng)
    spiculated = margin == "spiculated"
    half = int(np.ceil(radius * (3.3 if spiculated else 1.9))) + 3
    u, v = _grid(half, rotation)
    dist = np.hypot(u, v)
    r = outline(np.arctan2(v, u))
    softness = {"circumscribed": max(0.4, 0.015 * radius), "indistinct": 0.14 * radius}.get(margin, 0.05 * radius)
    inside = r - dist  # signed distance-ish, positive inside
    core = 1.0 / (1.0 + np.exp(-np.clip(inside / softness, -30, 30)))
    dome = 0.8 + 0.2 * np.sqrt(np.clip(1.0 - (dist / r) ** 2, 0.0, 1.0))
    amplitude = rng.uniform(0.22, 0.30)
    intensity = amplitude * core * dome
    mask = inside >= 0
    if spiculated:
        rays = _spicules(u, v, outline, radius=radius, rng=rng)
        intensity = np.maximum(intensity, amplitude * rays)
        mask |= rays > 0.3
    return LesionPatch(intensity.astype(np.float32), mask)


def _spicules(
    u: np.ndarray,
    v: np.ndarray,
    outline: Callable[[np.ndarray], np.ndarray],
    *,
    radius: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Thin tapering lines radiating from the mass edge; values in [0, 1]."""
    count = int(rng.integers(10, 22))
    angles = np.sort(rng.uniform(0, 2 * np.pi, count))
    rays = np.zeros_like(u)
    base_width = max(0.7, 0.035 * radius)
    for angle in angles:
        direction = np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)
        start = 0.7 * float(outline(np.array(angle)))
        length = radius * rng.uniform(0.8, 2.0)
        strength = rng.uniform(0.55, 0.85)
        t = (u * direction[0] + v * direction[1] - start) / length
        across = np.abs(-u * direction[1] + v * direction[0])
        width = base_width * (1.0 - 0.75 * np.clip(t, 0.0, 1.0))
        line = np.clip(width + 0.5 - across, 0.0, 1.0) * ((t >= 0) & (t <= 1))
        rays = np.maximum(rays, strength * (1.0 - 0.7 * np.clip(t, 0, 1)) * line)
    return rays


def _fine_pleomorphic(*, radius: float, rotation: float, speck: float, rng: np.random.Generator) -> LesionPatch:
    """Many tiny bright specks of varied size and elongation in a cluster."""
    count = int(rng.integers(20, 46))
    points = rng.normal(0.0, 0.45, size=(4 * count, 2))
    points = points[np.hypot(points[:, 0], points[:, 1]) < 0.95][:count] * radius
    half = int(np.ceil(radius * 1.25 + 2 * speck)) + 3
    u, v = _grid(half, rotation)
    intensity = np.zeros_like(u)
    for x, y in points:
        size = speck * rng.uniform(0.6, 1.5)
        elongation = rng.uniform(0.3, 1.0)  # pleomorphic: dots, commas, short rods
        angle = rng.uniform(0, np.pi)
        du, dv = u - x, v - y
        c, s = np.cos(angle), np.sin(angle)
        a = (du * c + dv * s) / size
        b = (-du * s + dv * c) / (size * elongation)
        rho = np.sqrt(a * a + b * b)
        speck_value = np.clip((1.0 - rho) * size * elongation + 0.5, 0.0, 1.0)
        intensity = np.maximum(intensity, rng.uniform(0.40, 0.60) * speck_value)
    return LesionPatch(intensity.astype(np.float32), _hull_mask(intensity > 0.1, radius))


def _popcorn(*, radius: float, rotation: float, rng: np.random.Generator) -> LesionPatch:
    """A few large, lobulated, very bright blobs (degenerating fibroadenoma)."""
    count = int(rng.integers(3, 8))
    half = int(np.ceil(radius * 1.25)) + 3
    u, v = _grid(half, rotation)
    intensity = np.zeros_like(u)
    for _ in range(count):
        angle, reach = rng.uniform(0, 2 * np.pi), radius * np.sqrt(rng.uniform(0.0, 0.45))
        x, y = reach * np.cos(angle), reach * np.sin(angle)
        size = radius * rng.uniform(0.14, 0.26)
        du, dv = u - x, v - y
        theta = np.arctan2(dv, du)
        lobes = 1.0 + sum(rng.uniform(0.08, 0.25) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (3, 4, 5))
        blob = np.clip(size * lobes - np.hypot(du, dv) + 0.5, 0.0, 1.0)
        intensity = np.maximum(intensity, rng.uniform(0.50, 0.65) * blob)
    return LesionPatch(intensity.astype(np.float32), _hull_mask(intensity > 0.1, radius))


def _vascular(*, radius: float, rotation: float, speck: float, rng: np.random.Generator) -> LesionPatch:
    """Parallel, interrupted bright tracks along the two walls of a curving vessel."""
    length = 2.0 * radius * rng.uniform(1.0, 1.3)
    amplitude = radius * rng.uniform(0.08, 0.22)
    wavelength = length * rng.uniform(0.8, 1.6)
    phase = rng.uniform(0, 2 * np.pi)
    along = np.linspace(-length / 2, length / 2, max(32, int(2 * length)))
    across = amplitude * np.sin(2 * np.pi * along / wavelength + phase)
    curve = np.stack([along, across], axis=1)
    tangent = np.gradient(curve, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    vessel = max(1.5, 1.2 * speck)  # half the distance between the two walls
    wall = max(0.6, 0.35 * speck)  # half thickness of a calcified wall
    margin = max(2.0, 0.12 * radius)
    half = int(np.ceil(length / 2 + amplitude + vessel + wall + margin)) + 3
    u, v = _grid(half, rotation)
    points = np.stack([u.ravel(), v.ravel()], axis=1)
    distance, nearest = cKDTree(curve).query(points)
    normal = np.stack([-tangent[nearest, 1], tangent[nearest, 0]], axis=1)
    offset = np.sum((points - curve[nearest]) * normal, axis=1).reshape(u.shape)
    distance = distance.reshape(u.shape)
    position = along[nearest].reshape(u.shape)
    period = length * rng.uniform(0.15, 0.3)
    intensity = np.zeros_like(u)
    for side in (-1.0, 1.0):
        # Calcium deposits along a wall come in segments with gaps between them.
        dashes = np.sin(2 * np.pi * position / period + rng.uniform(0, 2 * np.pi)) > -0.4
        track = np.clip(wall + 0.5 - np.abs(offset - side * vessel), 0.0, 1.0) * dashes
        intensity = np.maximum(intensity, rng.uniform(0.40, 0.55) * track)
    intensity = np.where(np.abs(offset) < vessel, np.maximum(intensity, 0.04), intensity)
    on_curve = distance <= np.abs(offset) + 1.0  # excludes the caps beyond the curve's ends
    intensity *= on_curve
    mask = distance <= vessel + wall + margin
    return LesionPatch(intensity.astype(np.float32), mask)


def _hull_mask(specks: np.ndarray, radius: float) -> np.ndarray:
    """The cluster region: convex hull of the specks, widened by a small margin."""
    ys, xs = np.nonzero(specks)
    hull = np.zeros(specks.shape, dtype=bool)
    if len(xs) >= 3:
        points = np.stack([xs, ys], axis=1).astype(float)
        try:
            vertices = points[ConvexHull(points).vertices]
            canvas = Image.new("L", (specks.shape[1], specks.shape[0]), 0)
            ImageDraw.Draw(canvas).polygon([tuple(p) for p in vertices], fill=1, outline=1)
            hull = np.asarray(canvas, dtype=bool)
        except QhullError:  # all specks on one line
            hull = specks.copy()
    hull |= specks
    margin = max(2.0, 0.12 * radius)
    return ndimage.distance_transform_edt(~hull) <= margin
