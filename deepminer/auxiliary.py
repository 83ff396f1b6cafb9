"""Auxiliary features (paper §2.5): per-case tabular inputs such as age or a polygenic risk score.

They enter the classifier as a per-class linear term added to every location's logits::

    logits_c(x, y) = Σ_k w_ck A_k(x, y) + b_c + Σ_j v_cj z_j,    z_j = (a_j - mean_j) / std_j

with ``a_j`` the raw value of feature j and ``mean_j``, ``std_j`` its statistics
over the training cases. The term is constant over locations, so the mean of
the FCN's logit map is still the classifier's logits, and the CAM
``Σ_k w_ck A_k`` and unit influence are unchanged and exact.

This module is NumPy only (the service uses it); the torch head is
:class:`deepminer.fcn.AuxiliaryHead`, the per-class term
:func:`deepminer.formulas.auxiliary_term`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

COLUMN_PREFIX = "aux:"
"""Manifest columns named ``aux:<name>`` carry the per-case value of feature ``<name>``."""


@dataclass(frozen=True)
class AuxFeature:
    """One auxiliary feature: its name and the normalisation ``z = (a - mean) / std`` fitted on the training cases."""

    name: str
    mean: float
    std: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an auxiliary feature needs a name, got ''")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(
                f"auxiliary feature {self.name!r} needs a finite mean and std > 0, got {self.mean}, {self.std}"
            )

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, value: Any) -> AuxFeature:
        """Inverse of :meth:`to_json`; ValueError naming what is wrong."""
        if not isinstance(value, dict) or set(value) != {"name", "mean", "std"}:
            raise ValueError(f"an auxiliary feature must be {{name, mean, std}}, got {value!r}")
        return cls(name=str(value["name"]), mean=float(value["mean"]), std=float(value["std"]))


def fit_normalisation(names: Sequence[str], cases: Sequence[Mapping[str, float]]) -> tuple[AuxFeature, ...]:
    """Mean and population standard deviation of each named feature over ``cases`` (one mapping per case).

    Each case counts once however many images it has; both are rounded to
    float32. A feature that is constant over the cases gets ``std = 1`` (it then only shifts the logits,
    and dividing by 0 would make it unusable). Raises ValueError for no cases
    or a case without one of the features.
    """
    if not cases:
        raise ValueError("no cases to fit the auxiliary feature normalisation on")
    features = []
    for name in names:
        missing = sum(1 for case in cases if name not in case)
        if missing:
            raise ValueError(f"auxiliary feature {name!r} is missing in {missing} of {len(cases)} cases")
        values = np.asarray([case[name] for case in cases], dtype=np.float64)
        std = float(values.std())
        # Rounded to float32, the precision the model (and its ONNX graph) holds them in,
        # so meta.json and the graph normalise identically.
        mean32, std32 = float(np.float32(values.mean())), float(np.float32(std if std > 0 else 1.0))
        features.append(AuxFeature(name=name, mean=mean32, std=std32))
    return tuple(features)


def aux_vector(values: Mapping[str, float], names: Sequence[str], *, owner: str = "") -> np.ndarray:
    """The raw values of ``names``, in that order, as a float32 ``(J,)`` array.

    ``owner`` (an image or case id) goes into the ValueError raised for a missing or non-finite value.
    """
    where = f" of {owner}" if owner else ""
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"auxiliary features {missing}{where} are missing; it has {sorted(values)}")
    out = np.asarray([float(values[n]) for n in names], dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"auxiliary features{where} must be finite numbers, got {dict(zip(names, out.tolist()))}")
    return out
