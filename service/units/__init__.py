"""The unit catalogue and what the bundle shows about units, one module per job.

- :mod:`~service.units.catalog`: rankings joined with the label store; expert label writes.
- :mod:`~service.units.rankings`: ``rankings.json`` indexed by unit.
- :mod:`~service.units.labels`: labels as the catalogue hands them out and takes them in; a unit's ETag.
- :mod:`~service.units.embedding`: the 2-D unit embedding joined with the labels.
- :mod:`~service.units.bundle_files`: unit visualisations and the bundle PNGs pages show.
- :mod:`~service.units.patch_rendering`: top patches of units outside the ranked set, rendered on demand.
- :mod:`~service.units.seeding`: the bundle's automatic labels, stored once.
- :mod:`~service.units.vocabulary`: the labels given so far, offered as suggestions.

HTTP preconditions (If-Match) are the API's business: :mod:`service.api.preconditions`.
"""

from service.units.bundle_files import VISUALISATION_SUFFIX, BundleFile, find_bundle_file, visualisation_entry
from service.units.catalog import EtagPrecondition, UnitCatalog, UnitInfo, UnitOverview
from service.units.embedding import EmbeddingPoint, UnitEmbedding, embedding_with_labels
from service.units.labels import LabelWrite, UnitAnnotation, Written, unit_etag
from service.units.patch_rendering import PATCH_KINDS, PatchKind, RenderedUnit, UnitPatchRenderer
from service.units.rankings import ClassCoverage, UnitRanking, index_rankings
from service.units.seeding import seed_automatic_labels
from service.units.vocabulary import LabelTerm, label_vocabulary

__all__ = [
    "PATCH_KINDS",
    "VISUALISATION_SUFFIX",
    "BundleFile",
    "ClassCoverage",
    "EmbeddingPoint",
    "EtagPrecondition",
    "LabelTerm",
    "LabelWrite",
    "PatchKind",
    "RenderedUnit",
    "UnitAnnotation",
    "UnitCatalog",
    "UnitEmbedding",
    "UnitInfo",
    "UnitOverview",
    "UnitPatchRenderer",
    "UnitRanking",
    "Written",
    "embedding_with_labels",
    "find_bundle_file",
    "index_rankings",
    "label_vocabulary",
    "seed_automatic_labels",
    "unit_etag",
    "visualisation_entry",
]
