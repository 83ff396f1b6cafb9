"""The bundle's unit rankings (``rankings.json``), indexed by unit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from deepminer.bundle import Bundle, BundleError


@dataclass(frozen=True)
class UnitRanking:
    """What the bundle's ranking says about one unit; empty mappings when no class ranks it."""

    unit_id: int
    threshold: float
    ranks: Mapping[str, int]
    counts: Mapping[str, int]
    mean_influence: Mapping[str, float]

    @classmethod
    def unranked(cls, unit_id: int, threshold: float) -> UnitRanking:
        """A unit no class ranks: only its threshold is known."""
        empty: Mapping[str, Any] = MappingProxyType({})
        return cls(unit_id=unit_id, threshold=threshold, ranks=empty, counts=empty, mean_influence=empty)


@dataclass(frozen=True)
class ClassCoverage:
    """Share of all per-image top-n slots of a class that its ranked units fill."""

    coverage: float
    slots_total: int
    ranked_units: int


def index_rankings(rankings: Mapping[str, Any], bundle: Bundle) -> dict[int, UnitRanking]:
    """Per-unit view of ``rankings.json``, ranked units only; a malformed file is a :class:`BundleError`."""
    where = bundle.root / "rankings.json"
    try:
        thresholds = [float(t) for t in rankings["unit_thresholds"]]
        per_class: Mapping[str, Any] = rankings["per_class"]
        entries: dict[int, dict[str, dict[str, Any]]] = {}
        for name in bundle.classes:
            for unit in per_class[name]["units"]:
                entries.setdefault(int(unit["unit_id"]), {})[name] = unit
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where} is malformed ({exc.__class__.__name__}: {exc}); rebuild the bundle") from exc
    if len(thresholds) != bundle.num_units:
        raise BundleError(f"{where} has {len(thresholds)} unit_thresholds, the model has {bundle.num_units} units")
    bad = [u for u in entries if not 0 <= u < bundle.num_units]
    if bad:
        raise BundleError(f"{where} ranks unit ids outside [0, {bundle.num_units}): {bad[:5]}")
    return {
        unit_id: UnitRanking(
            unit_id=unit_id,
            threshold=thresholds[unit_id],
            ranks=MappingProxyType({c: int(e["rank"]) for c, e in by_class.items()}),
            counts=MappingProxyType({c: int(e["count"]) for c, e in by_class.items()}),
            mean_influence=MappingProxyType({c: float(e["mean_influence"]) for c, e in by_class.items()}),
        )
        for unit_id, by_class in entries.items()
    }


def class_coverage(rankings: Mapping[str, Any]) -> Mapping[str, ClassCoverage]:
    """Each ranking class's coverage, from ``rankings.json``'s ``per_class``."""
    return MappingProxyType(
        {
            name: ClassCoverage(
                coverage=float(entry["coverage"]),
                slots_total=int(entry["slots_total"]),
                ranked_units=len(entry["units"]),
            )
            for name, entry in rankings["per_class"].items()
        }
    )
