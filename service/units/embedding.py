"""The bundle's 2-D unit embedding (``embedding.json``) joined with the units' labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deepminer.bundle import Bundle, BundleError
from service.errors import NotInBundleError
from service.units.labels import UnitAnnotation


@dataclass(frozen=True)
class EmbeddingPoint:
    """One unit in the 2-D embedding, with its latest labels."""

    unit_id: int
    x: float
    y: float
    ranked: bool
    annotations: tuple[UnitAnnotation, ...]


@dataclass(frozen=True)
class UnitEmbedding:
    """The bundle's 2-D PCA of every unit (``embedding.json``) joined with the labels."""

    model_id: str
    bundle_hash: str
    method: str
    num_images: int
    explained_variance_ratio: tuple[float, ...]
    units: tuple[EmbeddingPoint, ...]


def embedding_with_labels(bundle: Bundle, labels: Mapping[int, tuple[UnitAnnotation, ...]]) -> UnitEmbedding:
    """``bundle``'s embedding with each unit's ``labels``; :class:`NotInBundleError` when it has none."""
    embedding = bundle.embedding
    if embedding is None:
        raise NotInBundleError(
            f"bundle {bundle.id} has no unit embedding (embedding.json); rebuild it with `python -m training`"
        )
    try:
        points = tuple(
            EmbeddingPoint(
                unit_id=int(u["unit_id"]),
                x=float(u["x"]),
                y=float(u["y"]),
                ranked=bool(u.get("ranked", False)),
                annotations=labels.get(int(u["unit_id"]), ()),
            )
            for u in embedding["units"]
        )
        return UnitEmbedding(
            model_id=bundle.id,
            bundle_hash=bundle.hash,
            method=str(embedding["method"]),
            num_images=int(embedding["num_images"]),
            explained_variance_ratio=tuple(float(v) for v in embedding["explained_variance_ratio"]),
            units=points,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{bundle.root}/embedding.json is malformed ({exc!r}); rebuild the bundle") from exc
