"""The patch classifier and its fully convolutional form (DESIGN.md §1–2).

The classifier is a torchvision ResNet whose ``fc`` predicts the classes. The
FCN applies that same ``fc`` as a 1×1 convolution at every layer4 location
instead of after global average pooling. Pooling and ``fc`` are both linear, so
the spatial mean of the FCN's logit map equals the classifier's logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet

RESNET_BUILDERS = {
    18: resnet.resnet18,
    34: resnet.resnet34,
    50: resnet.resnet50,
    101: resnet.resnet101,
    152: resnet.resnet152,
}


def build_classifier(*, depth: int = 152, num_classes: int = 3, imagenet_weights: Path | None = None) -> resnet.ResNet:
    """A ResNet of ``depth`` with a ``num_classes`` linear head.

    ``imagenet_weights`` is a local torchvision ImageNet state-dict file; its
    1000-class ``fc`` is dropped and the new head keeps its fresh initialisation.
    Nothing is downloaded.
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
    return model


class FullyConvolutional(nn.Module):
    """ResNet body up to layer4 plus ``fc`` as a 1×1 convolution.

    ``forward(x)`` returns ``(logit_maps, features)``: ``(N, C, h, w)`` class
    logits at every layer4 location and the ``(N, K, h, w)`` layer4 activations.
    """

    def __init__(self, classifier: resnet.ResNet) -> None:
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(features), features


def to_fcn(classifier: resnet.ResNet) -> FullyConvolutional:
    """FCN conversion: ``fc`` becomes a 1×1 convolution over every layer4 location, no pooling."""
    return FullyConvolutional(classifier)


def num_units(classifier: resnet.ResNet) -> int:
    """Number of layer4 units (channels): 512 for ResNet-18/34, 2048 for 50/101/152."""
    return int(classifier.fc.in_features)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)
