"""Which images a phantom data set holds and which findings each one shows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.phantoms.config import PhantomConfig
from training.phantoms.findings import FindingSpec, sample_finding

VIEWS: tuple[str, ...] = ("CC", "MLO")
SIDES: tuple[str, ...] = ("L", "R")

# Stream tags in the seed sequences keep the random streams of planning, cases
# and images apart (numpy SeedSequence takes the whole list as entropy).
_NORMALS_STREAM = 0
_CASE_STREAM = 1
IMAGE_STREAM = 2


@dataclass(frozen=True)
class ImageSpec:
    """One image to render: ``index`` (0-based over the data set) seeds its pixels."""

    index: int
    case_index: int
    laterality: str
    view: str
    findings: tuple[FindingSpec, ...]

    @property
    def case_id(self) -> str:
        return f"P{self.case_index:04d}"

    @property
    def image_id(self) -> str:
        return f"P{self.case_index:04d}_{self.laterality}_{self.view}"


def plan_images(config: PhantomConfig) -> list[ImageSpec]:
    """Every image of the data set, case by case (cases are 0-based).

    Exactly ``round(normal_fraction * n_cases)`` cases are normal (chosen by a
    seeded permutation). An abnormal case has 1..``max_findings`` findings, all
    in one breast, shown in that breast's CC and MLO views. With fewer than
    four views per case the affected breast is imaged first. Each case draws
    its findings from its own stream seeded by (seed, case).
    """
    n_normal = round(config.normal_fraction * config.n_cases)
    order = np.random.default_rng([config.seed, _NORMALS_STREAM, config.n_cases]).permutation(config.n_cases)
    normal = set(order[:n_normal].tolist())
    specs: list[ImageSpec] = []
    for case in range(config.n_cases):
        rng = np.random.default_rng([config.seed, _CASE_STREAM, case])
        side = str(rng.choice(SIDES))
        findings: tuple[FindingSpec, ...] = ()
        if case not in normal:
            count = int(rng.integers(1, config.max_findings + 1))
            findings = tuple(sample_finding(rng, mass_share=config.mass_share) for _ in range(count))
        other = "R" if side == "L" else "L"
        views = [(s, v) for s in (side, other) for v in VIEWS][: config.views_per_case]
        # Listed in a fixed order (L before R, CC before MLO) whatever side is affected.
        for laterality, view in sorted(views):
            specs.append(
                ImageSpec(
                    index=len(specs),
                    case_index=case,
                    laterality=laterality,
                    view=view,
                    findings=findings if laterality == side else (),
                )
            )
    return specs
