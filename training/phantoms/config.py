"""Settings of a phantom data set."""

from __future__ import annotations

from dataclasses import dataclass

MAX_VIEWS_PER_CASE = 4  # CC and MLO of both breasts


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate; equal configs give byte-identical data sets.

    ``height`` is the image height in pixels; the width is ``round(aspect *
    height)`` (portrait). ``normal_fraction`` of the cases (rounded) have no
    finding; the others have 1 to ``max_findings`` findings, a share
    ``mass_share`` of which are masses and the rest calcification clusters.
    ``texture_beta`` is the exponent of the 1/f^beta power spectrum of the
    parenchymal texture.
    """

    n_cases: int = 25
    views_per_case: int = 4
    height: int = 1000
    normal_fraction: float = 0.34
    seed: int = 0
    aspect: float = 0.7
    max_findings: int = 2
    mass_share: float = 0.55
    texture_beta: float = 3.0

    def __post_init__(self) -> None:
        if self.n_cases < 1:
            raise ValueError(f"n_cases must be at least 1, got {self.n_cases}")
        if not 1 <= self.views_per_case <= MAX_VIEWS_PER_CASE:
            raise ValueError(f"views_per_case must be in 1..{MAX_VIEWS_PER_CASE}, got {self.views_per_case}")
        if self.height < 64:
            raise ValueError(f"height must be at least 64 px, got {self.height}")
        if not 0.0 <= self.normal_fraction <= 1.0:
            raise ValueError(f"normal_fraction must be in [0, 1], got {self.normal_fraction}")
        if not 0.6 <= self.aspect <= 0.8:
            raise ValueError(f"aspect (width / height) must be in [0.6, 0.8], got {self.aspect}")
        if self.max_findings < 1:
            raise ValueError(f"max_findings must be at least 1, got {self.max_findings}")
        if not 0.0 <= self.mass_share <= 1.0:
            raise ValueError(f"mass_share must be in [0, 1], got {self.mass_share}")
        if not 0.0 < self.texture_beta <= 5.0:
            raise ValueError(f"texture_beta must be in (0, 5], got {self.texture_beta}")

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return round(self.aspect * self.height)


DEMO_PHANTOMS = PhantomConfig(n_cases=120, views_per_case=2, height=640)
"""The demo's training phantoms (``python -m training demo``, whose ``--cases``, ``--height`` and ``--seed`` override
these). The demo reuses its phantom folder only when the folder's ``phantoms.json`` records exactly this config.

Two views a case, those of the breast with the findings (of a normal case, one breast): the same 240 images as 60
cases of four views, at the same cost to make and to cut, but twice the findings, since the lesion-free breasts of
abnormal cases are left out. The demo trains on every image with a lesion each epoch and on a quarter of the others
(``DEMO_CONFIG.normal_image_share``), so its steps see twice as many distinct lesions (README, "How good are these
explanations?"). The unseen sets the README scores it on keep the default of four views."""
