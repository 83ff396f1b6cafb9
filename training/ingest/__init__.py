"""Bring public data sets in as manifests (see :mod:`training.manifest` and docs/data.md).

- :func:`ingest_cbis_ddsm` (``python -m training ingest-cbis``): CBIS-DDSM's
  description CSVs and DICOM tree → manifest, optionally merged with a
  manifest of normal images.
"""

from training.ingest.cbis_ddsm import IngestReport, ingest_cbis_ddsm, merge_manifests

__all__ = ["IngestReport", "ingest_cbis_ddsm", "merge_manifests"]
