"""Write a phantom data set to disk: 16-bit PNG images, 8-bit PNG masks and a manifest."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from training.manifest import Finding, ImageRecord, write_manifest
from training.phantoms.config import PhantomConfig
from training.phantoms.plan import ImageSpec, plan_images
from training.phantoms.render import render_phantom

MANIFEST_NAME = "manifest.csv"
CONFIG_NAME = "phantoms.json"
"""The :class:`PhantomConfig` a data set was generated with, beside its manifest."""


def written_config(out_dir: Path) -> PhantomConfig | None:
    """The config the phantoms in ``out_dir`` were generated with (its ``phantoms.json``), None without one."""
    path = Path(out_dir) / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return PhantomConfig(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a phantom config: {exc}") from None


def generate_phantoms(
    out_dir: Path,
    *,
    config: PhantomConfig = PhantomConfig(),  # noqa: B008  (frozen, so a shared default is safe)
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate the data set described by ``config`` in ``out_dir``; return the manifest path.

    Layout: ``images/<image_id>.png`` (uint16, mode "I;16"),
    ``masks/<image_id>_<finding_id>.png`` (uint8, 255 inside) and
    ``manifest.csv`` (see :mod:`training.manifest`), and ``config`` as
    ``phantoms.json`` (:func:`written_config`). Every image is seeded by
    (seed, image index), so the files are byte-identical for equal configs
    whatever ``workers`` is (default: ``os.cpu_count()``; 1 runs in-process).
    Existing files of the same names are overwritten; others are left alone.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1 or None, got {workers}")
    out_dir = Path(out_dir).resolve()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    specs = plan_images(config)
    workers = min(workers or os.cpu_count() or 1, len(specs))
    bar = tqdm(total=len(specs), desc="phantoms", unit="img", disable=not progress)
    try:
        if workers == 1:
            records = []
            for spec in specs:
                records.append(write_phantom(spec, config, out_dir))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(write_phantom, spec, config, out_dir) for spec in specs]
                records = []
                for future in futures:  # in submission order, so the manifest order is fixed
                    records.append(future.result())
                    bar.update()
    finally:
        bar.close()
    manifest = out_dir / MANIFEST_NAME
    write_manifest(manifest, records)
    (out_dir / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=1) + "\n")
    return manifest


def write_phantom(spec: ImageSpec, config: PhantomConfig, out_dir: Path) -> ImageRecord:
    """Render one image, write its image and mask files under ``out_dir``; return its record."""
    phantom = render_phantom(spec, config)
    image_path = out_dir / "images" / f"{spec.image_id}.png"
    # Level 1: the quantum noise makes 16-bit images nearly incompressible anyway,
    # and higher levels cost more time than they save space.
    Image.fromarray(phantom.image).save(image_path, compress_level=1)
    findings = []
    for found in phantom.findings:
        mask_path = out_dir / "masks" / f"{spec.image_id}_{found.finding_id}.png"
        Image.fromarray(found.mask.astype(np.uint8) * 255).save(mask_path)
        findings.append(
            Finding(
                finding_id=found.finding_id,
                pathology=found.pathology,
                concept=found.concept,
                lexicon=found.lexicon,
                descriptors=found.descriptors,
                mask_path=mask_path,
            )
        )
    return ImageRecord(
        image_id=spec.image_id,
        case_id=spec.case_id,
        image_path=image_path,
        view=spec.view,
        laterality=spec.laterality,
        findings=tuple(findings),
    )
