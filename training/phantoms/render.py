"""Render one phantom image, in memory: pixels, breast mask and every finding's mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training.phantoms.anatomy import Anatomy, build_anatomy
from training.phantoms.config import PhantomConfig
from training.phantoms.findings import ANATOMY_LEXICON, FindingSpec
from training.phantoms.lesions import LesionPatch, render_lesion
from training.phantoms.plan import IMAGE_STREAM, ImageSpec

_UINT16_MAX = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class RenderedFinding:
    """A finding or anatomy concept of one image with its full-size mask."""

    finding_id: str  # "1", "2", ... for lesions; "pectoral", "skin" for anatomy
    pathology: str | None  # None for anatomy concepts
    concept: str
    lexicon: str
    descriptors: dict[str, str]
    mask: np.ndarray  # bool (height, width)


@dataclass(frozen=True)
class PhantomImage:
    """One rendered view, already in its final orientation (R views are mirrored)."""

    spec: ImageSpec
    image: np.ndarray  # uint16 (height, width)
    breast: np.ndarray  # bool (height, width)
    findings: tuple[RenderedFinding, ...]  # lesions first, then anatomy

    @property
    def lesions(self) -> tuple[RenderedFinding, ...]:
        return tuple(f for f in self.findings if f.pathology is not None)


def render_phantom(spec: ImageSpec, config: PhantomConfig) -> PhantomImage:
    """Render ``spec``; the pixels depend only on (config, spec), seeded by (seed, spec.index).

    On a 0-1 scale (x 65535 in the uint16 image): the background is below
    0.01; fat is about 0.15-0.30, dense tissue up to about 0.6, the pectoral
    muscle about 0.6-0.75; masses add 0.22-0.30 and calcifications 0.4-0.65
    (clipped at full scale), so lesions stand well above the texture.
    """
    rng = np.random.default_rng([config.seed, IMAGE_STREAM, spec.index])
    height, width = config.height, config.width
    anatomy = build_anatomy(spec.view, height=height, width=width, beta=config.texture_beta, rng=rng)
    image = anatomy.tissue.copy()
    blocked = anatomy.pectoral | anatomy.skin | ~anatomy.breast
    speck = max(0.8, 0.0028 * height)
    found: list[RenderedFinding] = []
    for number, finding in enumerate(spec.findings, start=1):
        diameter = finding.size * width * rng.uniform(0.92, 1.08)
        # Same orientation in every view of the breast, give or take the projection.
        rotation = np.random.default_rng([finding.shape_seed, 1]).uniform(0, 2 * np.pi)
        patch = render_lesion(finding, diameter=diameter, rotation=rotation + rng.uniform(-0.35, 0.35), speck=speck)
        clearance = 0.55 * diameter + 2.0
        x, y = _place(anatomy, blocked, finding, view=spec.view, clearance=clearance)
        mask = _paste(image, patch, x=x, y=y, breast=anatomy.breast)
        blocked |= _disk(blocked.shape, x=x, y=y, radius=clearance)
        found.append(
            RenderedFinding(
                finding_id=str(number),
                pathology=finding.pathology,
                concept=finding.concept,
                lexicon=finding.lexicon,
                descriptors=finding.descriptors,
                mask=mask,
            )
        )
    if anatomy.pectoral.any():
        found.append(RenderedFinding("pectoral", None, "pectoral muscle", ANATOMY_LEXICON, {}, anatomy.pectoral))
    found.append(RenderedFinding("skin", None, "skin line", ANATOMY_LEXICON, {}, anatomy.skin))

    # Quantum noise inside the breast; the background is dark but not exactly 0.
    image += rng.normal(0.0, 0.006, image.shape).astype(np.float32)
    background = np.abs(rng.normal(0.0, 0.002, image.shape)).astype(np.float32)
    image = np.where(anatomy.breast, image, background)
    pixels = np.round(np.clip(image, 0.0, 1.0) * _UINT16_MAX).astype(np.uint16)

    breast = anatomy.breast
    if spec.laterality == "R":
        # Drawn with the chest wall on the left; a right breast has it on the right.
        pixels, breast = _mirror(pixels), _mirror(breast)
        found = [
            RenderedFinding(f.finding_id, f.pathology, f.concept, f.lexicon, f.descriptors, _mirror(f.mask))
            for f in found
        ]
    return PhantomImage(spec=spec, image=pixels, breast=breast, findings=tuple(found))


def _place(
    anatomy: Anatomy, blocked: np.ndarray, finding: FindingSpec, *, view: str, clearance: float
) -> tuple[int, int]:
    """Pixel centre for ``finding``: its breast coordinates, moved to the nearest free spot.

    The target lies at ``depth`` of the way from the chest wall to the nipple
    and ``0.8 * offset`` half-heights of the breast from the middle of the
    breast at that depth (the CC or MLO offset, depending on the view). A free
    spot is ``clearance`` px away from the background, skin, pectoral muscle,
    image border and earlier lesions.
    """
    height, width = blocked.shape
    free = ~blocked
    x_target = int(np.clip(finding.depth * anatomy.nipple[0], 0, width - 1))
    rows = np.nonzero(free[:, x_target])[0]
    offset = finding.offset_mlo if view == "MLO" else finding.offset_cc
    if len(rows):
        y_target = 0.5 * (rows[0] + rows[-1]) + offset * 0.4 * (rows[-1] - rows[0])
    else:
        y_target = anatomy.nipple[1]

    # Clearance on a coarse grid is enough for placement and much cheaper.
    step = max(1, min(height, width) // 160)
    coarse = np.pad(free[::step, ::step], 1, constant_values=False)
    room = ndimage.distance_transform_edt(coarse)[1:-1, 1:-1] * step
    ok = room >= clearance
    if not ok.any():
        ok = room >= room.max()  # a breast too small for the lesion: take the roomiest spot
    ys, xs = np.nonzero(ok)
    best = np.argmin((xs * step - x_target) ** 2 + (ys * step - y_target) ** 2)
    return int(xs[best] * step), int(ys[best] * step)


def _paste(image: np.ndarray, patch: LesionPatch, *, x: int, y: int, breast: np.ndarray) -> np.ndarray:
    """Add ``patch`` centred at (x, y) inside the breast; return the full-size finding mask."""
    height, width = image.shape
    half = patch.half
    top, left = y - half, x - half
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + 2 * half + 1, height), min(left + 2 * half + 1, width)
    window = (slice(y0, y1), slice(x0, x1))
    local = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    inside = breast[window]
    image[window] += patch.intensity[local] * inside
    mask = np.zeros_like(breast)
    mask[window] = patch.mask[local] & inside
    return mask


def _disk(shape: tuple[int, ...], *, x: int, y: int, radius: float) -> np.ndarray:
    ys, xs = np.ogrid[0 : shape[0], 0 : shape[1]]
    return (xs - x) ** 2 + (ys - y) ** 2 <= radius**2


def _mirror(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[:, ::-1])
