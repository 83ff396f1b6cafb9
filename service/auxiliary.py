"""Auxiliary features on /explain: the ``aux`` form field in, their per-class term out (paper §2.5).

A bundle trained with auxiliary features (``meta.json`` ``model.aux_features``)
needs their raw values with every image; the model normalises them itself.
They arrive as one multipart form field, ``aux``, holding a JSON object of
numbers keyed by feature name, e.g. ``{"age": 61, "prs": 0.8}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from deepminer.auxiliary import AuxFeature
from deepminer.formulas import auxiliary_term
from service.errors import InvalidParameterError

FIELD = "aux"
FIELD_DESCRIPTION = (
    'Auxiliary per-case features as a JSON object of numbers, e.g. `{"age": 61, "prs": 0.8}`: required, with '
    "exactly the model's features (`model.aux_features` in the bundle's meta.json), when the model was trained "
    "with them; refused otherwise. Raw values: the model applies its own normalisation. A missing, unknown, "
    "non-numeric or non-finite value gets 422 `invalid_parameter` naming `aux.<name>`."
)


@dataclass(frozen=True)
class AuxiliaryExplanation:
    """The auxiliary features used for one image and their per-class term ``Σ_j v_cj z_j``."""

    values: Mapping[str, float]  # raw, as given
    normalised: Mapping[str, float]  # z_j = (a_j - mean_j) / std_j
    contribution: np.ndarray  # (C,) added to every location of each class's logit map


def parse_aux(text: str | None, features: Sequence[AuxFeature]) -> np.ndarray | None:
    """The ``aux`` field's raw values ``(J,)`` float32, in the order of ``features``; None for a model without any.

    Raises :class:`InvalidParameterError` naming ``aux`` (missing field,
    malformed JSON, given to a model without auxiliary features) or
    ``aux.<name>`` (missing, unknown, non-numeric or non-finite value).
    """
    names = [f.name for f in features]
    if not features:
        if text is not None:
            raise InvalidParameterError("this model takes no auxiliary features; remove the aux field", field=FIELD)
        return None
    if text is None:
        raise InvalidParameterError(f"this model needs the auxiliary features {names} in the aux field", field=FIELD)
    try:
        given = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(
            f'aux must be a JSON object such as {{"{names[0]}": 61}}; {exc}', field=FIELD
        ) from None
    if not isinstance(given, dict):
        raise InvalidParameterError(
            f"aux must be a JSON object of numbers keyed by {names}, got {text[:80]!r}", field=FIELD
        )
    for name in given:
        if name not in names:
            raise InvalidParameterError(
                f"{name!r} is not an auxiliary feature of this model; it takes {names}", field=f"{FIELD}.{name}"
            )
    values = []
    for name in names:
        if name not in given:
            raise InvalidParameterError(
                f"auxiliary feature {name!r} is missing; give all of {names}", field=f"{FIELD}.{name}"
            )
        value = given[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidParameterError(
                f"auxiliary feature {name!r} must be a finite number, got {value!r}", field=f"{FIELD}.{name}"
            )
        values.append(float(value))
    return np.asarray(values, dtype=np.float32)


def explain_aux(values: np.ndarray, features: Sequence[AuxFeature], weight: np.ndarray) -> AuxiliaryExplanation:
    """The values used, normalised, and their per-class term with the class weights V ``(C, J)``."""
    mean = np.asarray([f.mean for f in features])
    std = np.asarray([f.std for f in features])
    z = (values.astype(np.float64) - mean) / std
    return AuxiliaryExplanation(
        values={f.name: float(v) for f, v in zip(features, values)},
        normalised={f.name: float(v) for f, v in zip(features, z)},
        contribution=auxiliary_term(values, mean, std, weight),
    )
