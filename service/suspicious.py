"""The bundle's most suspicious hold-out patches (``suspicious/index.json``, written by training/suspicious.py).

A starting point for review: the cells the model finds most malignant and most
benign across its hold-out mammograms. Only reading and filtering happen here;
the page runs the region query on a chosen patch through ``POST /query/region``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deepminer.bundle import SUSPICIOUS_INDEX_FILE, Bundle
from service.errors import InvalidParameterError, NotInBundleError


@dataclass(frozen=True)
class SuspiciousList:
    """The index's description and the patches chosen by class and limit, each with its image's entry."""

    index: Mapping[str, Any]
    patches: list[Mapping[str, Any]]


def suspicious_patches(bundle: Bundle, *, class_name: str | None = None, limit: int | None = None) -> SuspiciousList:
    """Patches of one lesion class (or every one), most probable first; at most ``limit`` of them.

    :class:`NotInBundleError` when the bundle has none (older bundles);
    :class:`InvalidParameterError` (field ``class``) for a class it does not list.
    """
    index = bundle.suspicious_patches
    if index is None:
        raise NotInBundleError(
            f"bundle {bundle.id} records no suspicious patches ({SUSPICIOUS_INDEX_FILE}); rebuild it with "
            "`python -m training build` to add them"
        )
    classes = list(index["classes"])
    if class_name is not None and class_name not in classes:
        raise InvalidParameterError(
            f"class must be one of the bundle's lesion classes {classes}, got {class_name!r}", field="class"
        )
    chosen = [p for p in index["patches"] if class_name is None or p["class"] == class_name]
    # Each class's list is stored by rank; across classes the most probable come first.
    chosen.sort(key=lambda p: (-p["probability"], classes.index(p["class"]), p["rank"]))
    return SuspiciousList(index=index, patches=chosen[:limit] if limit is not None else chosen)
