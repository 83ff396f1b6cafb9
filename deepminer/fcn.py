"""The patch classifier and its fully convolutional form (DESIGN.md §1–2).

The classifier is a torchvision ResNet whose ``fc`` predicts the classes. The
FCN applies that same ``fc`` as a 1×1 convolution at every layer4 location
instead of after global average pooling. Pooling and ``fc`` are both linear, so
the spatial mean of the FCN's logit map equals the classifier's logits.

Optional auxiliary features (per-case tabular inputs, :mod:`deepminer.auxiliary`)
add one per-class term, the same at every location, to both forms: the
classifier becomes ``fc(avgpool(A)) + V z`` and the FCN's logit map
``head(A) + V z``, so the mean-equals-logits identity and the CAM still hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import torch
from torch import nn
from torchvision.models import resnet

from deepminer.auxiliary import AuxFeature
from deepminer.bundle import WEIGHTS_FILE, Bundle

RESNET_BUILDERS = {
    18: resnet.resnet18,
    34: resnet.resnet34,
    50: resnet.resnet50,
    101: resnet.resnet101,
    152: resnet.resnet152,
}


class AuxiliaryHead(nn.Module):
    """The auxiliary features' per-class term ``Σ_j v_cj z_j``, ``z_j = (a_j - mean_j) / std_j``.

    ``forward(aux)`` takes the raw values ``a`` ``(N, J)`` and returns ``(N, C)``.
    The normalisation is held as buffers, so every caller (training, the FCN,
    the exported ONNX graph) passes raw values. ``weight`` (``V``, ``(C, J)``)
    starts at zero: training begins from exactly the image-only classifier, and
    building the head draws nothing from the RNG, so the image layers get the
    same initialisation with or without auxiliary features.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, features: Sequence[AuxFeature], num_classes: int) -> None:
        super().__init__()
        if not features:
            raise ValueError("AuxiliaryHead needs at least one feature, got none")
        self.names = tuple(f.name for f in features)
        self.weight = nn.Parameter(torch.zeros(num_classes, len(features)))
        self.register_buffer("mean", torch.tensor([f.mean for f in features], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([f.std for f in features], dtype=torch.float32))

    @property
    def features(self) -> tuple[AuxFeature, ...]:
        return tuple(
            AuxFeature(name=n, mean=float(m), std=float(s))
            for n, m, s in zip(self.names, self.mean.tolist(), self.std.tolist())
        )

    def forward(self, aux: torch.Tensor) -> torch.Tensor:
        if aux.dim() != 2 or aux.shape[1] != len(self.names):
            raise ValueError(
                f"aux must be (N, {len(self.names)}) raw values of {list(self.names)}, got {tuple(aux.shape)}"
            )
        return ((aux - self.mean) / self.std) @ self.weight.t()


class AuxiliaryClassifier(nn.Module):
    """The patch classifier with auxiliary features: ``forward(x, aux) = resnet(x) + aux_head(aux)``."""

    def __init__(self, classifier: resnet.ResNet, aux: AuxiliaryHead) -> None:
        super().__init__()
        self.resnet = classifier
        self.aux = aux

    def forward(self, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return self.resnet(x) + self.aux(aux)


Classifier: TypeAlias = resnet.ResNet | AuxiliaryClassifier


def build_classifier(
    *,
    depth: int = 152,
    num_classes: int = 3,
    imagenet_weights: Path | None = None,
    aux_features: Sequence[AuxFeature] = (),
) -> Classifier:
    """A ResNet of ``depth`` with a ``num_classes`` linear head.

    ``imagenet_weights`` is a local torchvision ImageNet state-dict file; its
    1000-class ``fc`` is dropped and the new head keeps its fresh initialisation.
    Nothing is downloaded. With ``aux_features`` the ResNet comes wrapped in an
    :class:`AuxiliaryClassifier` (state-dict keys ``resnet.*`` and ``aux.*``);
    without, it is the plain torchvision ResNet.
    """
    if depth not in RESNET_BUILDERS:
        raise ValueError(f"depth must be one of {sorted(RESNET_BUILDERS)}, got {depth}")
    model = RESNET_BUILDERS[depth](weights=None, num_classes=num_classes)
    if imagenet_weights is not None:
        path = Path(imagenet_weights)
        if not path.is_file():
            raise FileNotFoundError(f"ImageNet weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
            raise ValueError(
                f"{path} does not hold ResNet-{depth} weights: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
    if aux_features:
        return AuxiliaryClassifier(model, AuxiliaryHead(aux_features, num_classes))
    return model


class FullyConvolutional(nn.Module):
    """ResNet body up to layer4 plus ``fc`` as a 1×1 convolution.

    ``forward(x)`` returns ``(logit_maps, features)``: ``(N, C, h, w)`` class
    logits at every layer4 location and the ``(N, K, h, w)`` layer4 activations.
    With an auxiliary head, ``forward(x, aux)`` takes the raw values ``(N, J)``
    and adds their per-class term to every location of the logit maps.
    """

    def __init__(self, classifier: resnet.ResNet, aux: AuxiliaryHead | None = None) -> None:
        super().__init__()
        c = classifier
        # Share (not copy) the trained modules, so the FCN and the classifier
        # can never disagree.
        self.body = nn.Sequential(c.conv1, c.bn1, c.relu, c.maxpool, c.layer1, c.layer2, c.layer3, c.layer4)
        fc: nn.Linear = c.fc
        self.head = nn.Conv2d(fc.in_features, fc.out_features, kernel_size=1)
        with torch.no_grad():
            self.head.weight.copy_(fc.weight[:, :, None, None])
            self.head.bias.copy_(fc.bias)
        self.aux = aux  # shared with the classifier, like the body

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        if self.aux is None:
            if aux is not None:
                raise ValueError(f"this FCN has no auxiliary features, got aux of shape {tuple(aux.shape)}")
            return self.head(features), features
        if aux is None:
            raise ValueError(f"this FCN needs the auxiliary features {list(self.aux.names)} as aux (N, J), got None")
        # Constant over locations: the map's mean stays the classifier's logits, and the CAM stays exact.
        return self.head(features) + self.aux(aux)[:, :, None, None], features


def to_fcn(classifier: Classifier) -> FullyConvolutional:
    """FCN conversion: ``fc`` becomes a 1×1 convolution over every layer4 location, no pooling."""
    if isinstance(classifier, AuxiliaryClassifier):
        return FullyConvolutional(classifier.resnet, aux=classifier.aux)
    return FullyConvolutional(classifier)


def load_classifier(bundle: Bundle) -> Classifier:
    """The bundle's trained classifier (``weights.pt`` in the architecture its meta.json names), on the CPU.

    ``ValueError`` says which file does not fit which architecture.
    """
    model_meta = bundle.meta["model"]
    classifier = build_classifier(
        depth=int(model_meta["depth"]), num_classes=len(bundle.classes), aux_features=bundle.aux_features
    )
    state = torch.load(bundle.path(WEIGHTS_FILE), map_location="cpu", weights_only=True)
    try:
        classifier.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(
            f"{bundle.path(WEIGHTS_FILE)} does not fit a {model_meta['architecture']} with "
            f"{len(bundle.classes)} classes: {exc}"
        ) from exc
    return classifier


def load_fcn(bundle: Bundle) -> FullyConvolutional:
    """The bundle's FCN (:func:`to_fcn` of :func:`load_classifier`), on the CPU, in eval mode."""
    return to_fcn(load_classifier(bundle)).eval()


def num_units(classifier: Classifier) -> int:
    """Number of layer4 units (channels): 512 for ResNet-18/34, 2048 for 50/101/152."""
    net = classifier.resnet if isinstance(classifier, AuxiliaryClassifier) else classifier
    return int(net.fc.in_features)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)
