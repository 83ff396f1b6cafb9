"""Procedural phantom mammograms with known findings: the embedded default data set.

Full-field 16-bit views (CC and MLO of both breasts) with a breast outline,
1/f^3 parenchymal texture, a skin line, a pectoral muscle on MLO views, and
masses and calcification clusters with pixel masks, BI-RADS descriptors and a
pathology. Because every concept is known, explanations can be scored against
ground truth. Module map:

- ``config``: :class:`PhantomConfig`;
- ``plan``: which images, which findings (:func:`plan_images`);
- ``findings``: finding descriptions, names and the pathology rule;
- ``texture``, ``anatomy``, ``lesions``: drawing;
- ``render``: one image in memory (:func:`render_phantom`);
- ``generate``: the data set on disk (:func:`generate_phantoms`).
"""

from training.phantoms.config import DEMO_PHANTOMS, PhantomConfig
from training.phantoms.findings import FindingSpec, mass_pathology, sample_finding
from training.phantoms.generate import generate_phantoms, written_config
from training.phantoms.plan import ImageSpec, plan_images
from training.phantoms.render import PhantomImage, RenderedFinding, render_phantom

__all__ = [
    "DEMO_PHANTOMS",
    "FindingSpec",
    "ImageSpec",
    "PhantomConfig",
    "PhantomImage",
    "RenderedFinding",
    "generate_phantoms",
    "mass_pathology",
    "plan_images",
    "render_phantom",
    "sample_finding",
    "written_config",
]
