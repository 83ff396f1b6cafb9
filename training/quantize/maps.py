"""Whole mammograms through an ONNX FCN file: calibration inputs, and the maps the gates compare."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from deepminer.auxiliary import aux_vector
from deepminer.bundle import Bundle
from deepminer.fcn import AuxiliaryHead
from deepminer.imaging import network_input, read_image
from training.manifest import ImageRecord
from training.quantize.int8 import AUX_INPUT, FEATURES_OUTPUT, FeedReader, Feeds
from training.ranking import ImageMaps, fcn_maps

INPUT = "image"
OUTPUTS = ("logits", FEATURES_OUTPUT)


def session(path: Path, *, threads: int = 0) -> ort.InferenceSession:
    """An ONNX Runtime CPU session on ``path`` (``threads`` per run; 0: ONNX Runtime's default)."""
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxFcn(torch.nn.Module):
    """An FCN graph file in an ONNX Runtime session, called as :class:`deepminer.fcn.FullyConvolutional` is.

    ``forward(x, aux)`` returns ``(logits, features)`` as torch tensors, so
    :func:`training.ranking.fcn_maps` runs it image by image. ``aux`` carries
    the names of the auxiliary features (the graph normalises them itself).
    """

    def __init__(self, path: Path, *, bundle: Bundle, threads: int = 0) -> None:
        super().__init__()
        self.session = session(path, threads=threads)
        self.aux = AuxiliaryHead(bundle.aux_features, len(bundle.classes)) if bundle.aux_features else None

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feeds = {INPUT: x.cpu().numpy()}
        if aux is not None:
            feeds[AUX_INPUT] = aux.cpu().numpy()
        logits, features = self.session.run(list(OUTPUTS), feeds)
        return torch.from_numpy(logits), torch.from_numpy(features)


def onnx_maps(
    path: Path, records: Sequence[ImageRecord], *, bundle: Bundle, threads: int = 0, desc: str, progress: bool
) -> list[ImageMaps]:
    """Every record's :class:`ImageMaps` from the graph at ``path``, preprocessed as the service does."""
    fcn = OnnxFcn(path, bundle=bundle, threads=threads)
    maps = fcn_maps(
        fcn,  # type: ignore[arg-type]  # runs FullyConvolutional's call contract, which is all fcn_maps uses
        records, short_side=bundle.input_short_side, mean=bundle.mean, std=bundle.std, device=torch.device("cpu"),
        desc=desc, progress=progress,
    )
    return list(maps)


def feeds(record: ImageRecord, bundle: Bundle) -> Feeds:
    """The graph's inputs for one record: the network input at the serving size and, with them, the aux values."""
    x = network_input(read_image(record.image_path), short_side=bundle.input_short_side, mean=bundle.mean,
                      std=bundle.std)
    out = {INPUT: x}
    if bundle.aux_features:
        names = [f.name for f in bundle.aux_features]
        out[AUX_INPUT] = aux_vector(record.aux, names, owner=f"image {record.image_id!r}")[None].astype(np.float32)
    return out


def calibration_reader(records: Sequence[ImageRecord], bundle: Bundle) -> FeedReader:
    """The calibration images, read and preprocessed one at a time as the calibrator asks for them."""
    return FeedReader(len(records), lambda i: feeds(records[i], bundle))
