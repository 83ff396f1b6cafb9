"""The manifest CSV: how every data set (phantom, CBIS-DDSM, custom) is described.

One row per (image, finding). An image with no finding and no concept mask has
exactly one row whose finding columns are empty. Columns, in this order::

    image_id, case_id, image_path, view, laterality,
    finding_id, pathology, concept, lexicon, descriptors, mask_path

- ``image_path`` / ``mask_path``: relative to the manifest's folder (absolute
  paths are accepted on read; the writer makes paths under the folder relative).
- ``view``: CC | MLO (other strings are kept as they are); ``laterality``: L | R.
- ``pathology``: ``benign`` | ``malignant`` for lesions, empty for concept-only
  masks (anatomy such as "pectoral muscle"). An image without a benign or
  malignant row is a normal image.
- ``concept``: human-readable concept name; ``lexicon``: BI-RADS lexicon category
  ("Mass", "Calcification", "Normal tissue / anatomy", ...).
- ``descriptors``: ``key=value`` pairs joined by ``;``.
- ``finding_id``: unique within the image.

Optional columns ``aux:<name>`` (after the others) carry auxiliary per-case
features such as ``aux:age`` (``deepminer.auxiliary``): a number on every row,
the same on every row of a case. Other extra columns are ignored.

Reading checks everything above and raises :class:`ManifestError` naming the
file, the line and the column, so a broken data set fails before training.
"""

from training.manifest.reader import read_manifest
from training.manifest.records import (
    COLUMNS,
    LATERALITIES,
    PATHOLOGIES,
    Finding,
    ImageRecord,
    ManifestError,
    format_descriptors,
    parse_descriptors,
)
from training.manifest.writer import write_manifest

__all__ = [
    "COLUMNS",
    "LATERALITIES",
    "PATHOLOGIES",
    "Finding",
    "ImageRecord",
    "ManifestError",
    "format_descriptors",
    "parse_descriptors",
    "read_manifest",
    "write_manifest",
]
