"""What a phantom finding is (before it is drawn), its names and its pathology rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MASS_SHAPES: tuple[str, ...] = ("round", "oval", "irregular")
MASS_MARGINS: tuple[str, ...] = ("circumscribed", "indistinct", "spiculated")
CALCIFICATION_TYPES: tuple[str, ...] = ("fine pleomorphic", "coarse popcorn", "vascular")
KINDS: tuple[str, ...] = ("mass", "calcification")

MASS_LEXICON = "Mass"
CALCIFICATION_LEXICON = "Calcification"
ANATOMY_LEXICON = "Normal tissue / anatomy"

# Diameter ranges as a fraction of the image width.
MASS_SIZE = (0.06, 0.14)
CLUSTER_SIZE = (0.05, 0.12)

_CALCIFICATION_CONCEPTS = {
    "fine pleomorphic": ("fine pleomorphic calcifications", "clustered", "malignant"),
    "coarse popcorn": ("coarse popcorn calcifications", "clustered", "benign"),
    "vascular": ("vascular calcifications", "linear", "benign"),
}


@dataclass(frozen=True)
class FindingSpec:
    """One finding of a case, shared by every view of the affected breast.

    ``subtype`` is ``(shape, margin)`` for a mass and ``(type,)`` for a
    calcification. The position is in breast coordinates so that views agree:
    ``depth`` runs from the chest wall (0) to the nipple (1), ``offset_cc`` and
    ``offset_mlo`` across the breast (-1 .. 1) in the CC and MLO views.
    ``size`` is the diameter as a fraction of the image width. ``shape_seed``
    fixes the outline / speck layout, identical in every view.
    """

    kind: str
    subtype: tuple[str, ...]
    pathology: str
    size: float
    depth: float
    offset_cc: float
    offset_mlo: float
    shape_seed: int

    def __post_init__(self) -> None:
        if self.kind == "mass":
            if len(self.subtype) != 2 or self.subtype[0] not in MASS_SHAPES or self.subtype[1] not in MASS_MARGINS:
                raise ValueError(
                    f"mass subtype must be (shape, margin) from {MASS_SHAPES} x {MASS_MARGINS}, got {self.subtype}"
                )
        elif self.kind == "calcification":
            if len(self.subtype) != 1 or self.subtype[0] not in CALCIFICATION_TYPES:
                raise ValueError(f"calcification subtype must be one of {CALCIFICATION_TYPES}, got {self.subtype}")
        else:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.pathology not in ("benign", "malignant"):
            raise ValueError(f"pathology must be 'benign' or 'malignant', got {self.pathology!r}")

    @property
    def concept(self) -> str:
        """Human-readable concept, e.g. "irregular mass with spiculated margins"."""
        if self.kind == "mass":
            shape, margin = self.subtype
            return f"{shape} mass with {margin} margins"
        return _CALCIFICATION_CONCEPTS[self.subtype[0]][0]

    @property
    def lexicon(self) -> str:
        """BI-RADS lexicon category."""
        return MASS_LEXICON if self.kind == "mass" else CALCIFICATION_LEXICON

    @property
    def descriptors(self) -> dict[str, str]:
        """BI-RADS descriptors, e.g. {"shape": "oval", "margin": "circumscribed"}."""
        if self.kind == "mass":
            return {"shape": self.subtype[0], "margin": self.subtype[1]}
        kind = self.subtype[0]
        return {"type": kind, "distribution": _CALCIFICATION_CONCEPTS[kind][1]}


def mass_pathology(shape: str, margin: str, rng: np.random.Generator) -> str:
    """The phantoms' pathology rule for masses.

    - irregular shape or spiculated margin: malignant;
    - round or oval with circumscribed margin: benign;
    - round or oval with indistinct margin: malignant with probability 0.5
      (one draw from ``rng``, so it is seeded).
    """
    if shape not in MASS_SHAPES or margin not in MASS_MARGINS:
        raise ValueError(f"expected a shape in {MASS_SHAPES} and margin in {MASS_MARGINS}, got {shape!r}, {margin!r}")
    if shape == "irregular" or margin == "spiculated":
        return "malignant"
    if margin == "circumscribed":
        return "benign"
    return "malignant" if rng.random() < 0.5 else "benign"


def calcification_pathology(kind: str) -> str:
    """Fine pleomorphic clusters are malignant; coarse popcorn and vascular ones benign."""
    if kind not in CALCIFICATION_TYPES:
        raise ValueError(f"expected a calcification type in {CALCIFICATION_TYPES}, got {kind!r}")
    return _CALCIFICATION_CONCEPTS[kind][2]


def sample_finding(rng: np.random.Generator, *, mass_share: float, kind: str | None = None) -> FindingSpec:
    """Draw one finding; ``kind`` forces "mass" or "calcification".

    Shape and margin are drawn so that the classes come out roughly balanced
    (about half of the findings are malignant) and the combinations are the
    usual ones: spiculated margins go mostly with irregular shapes.
    """
    if kind is None:
        kind = "mass" if rng.random() < mass_share else "calcification"
    if kind == "mass":
        shape = str(rng.choice(MASS_SHAPES))
        margin_p = (0.0, 0.5, 0.5) if shape == "irregular" else (0.6, 0.25, 0.15)
        margin = str(rng.choice(MASS_MARGINS, p=margin_p))
        subtype: tuple[str, ...] = (shape, margin)
        pathology = mass_pathology(shape, margin, rng)
        size = rng.uniform(*MASS_SIZE)
    elif kind == "calcification":
        calc = str(rng.choice(CALCIFICATION_TYPES, p=(0.4, 0.3, 0.3)))
        subtype = (calc,)
        pathology = calcification_pathology(calc)
        size = rng.uniform(*CLUSTER_SIZE)
    else:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    return FindingSpec(
        kind=kind,
        subtype=subtype,
        pathology=pathology,
        size=float(size),
        depth=float(rng.uniform(0.2, 0.75)),
        offset_cc=float(rng.uniform(-0.7, 0.7)),
        offset_mlo=float(rng.uniform(-0.7, 0.7)),
        shape_seed=int(rng.integers(2**31)),
    )
