"""One BatchNorm batch over inputs of different sizes, such as whole mammograms and lesion crops.

Training-mode BatchNorm normalises every value of a channel with the mean and
variance of all values of that channel in the batch. Whole images and lesion
crops that one SGD step classifies cannot be stacked into one tensor, yet they
must share one BatchNorm batch: with a batch each, the running statistics
(which eval mode and the FCN use) would blend two populations, the crops
holding far less background than the images, and the FCN would misread the
background of every mammogram.

:func:`forward_together` runs a ResNet's body over several inputs as one batch:
each BatchNorm layer sees the values of all of them at once (PyTorch's own
batch norm over the inputs' values laid side by side), every other layer runs
on each input alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.resnet import BasicBlock, Bottleneck


def batchnorm_together(bn: _BatchNorm, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``bn`` on ``(N_i, C, H_i, W_i)`` inputs as one batch: in training mode, statistics over every value of
    every input, and one update of the running statistics, exactly as for the inputs stacked when they have one
    size; in eval mode, each input with the running statistics."""
    if not bn.training or len(xs) == 1:
        return [bn(x) for x in xs]
    channels = xs[0].shape[1]
    # (N, C, H, W) -> (N H W, C): a view for channels_last inputs; the values side by side, channel by channel.
    flat = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, channels) for x in xs])
    factor = 0.0
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    out = F.batch_norm(flat, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, factor, bn.eps)
    parts, start = [], 0
    for x in xs:
        n, _, h, w = x.shape
        parts.append(out[start : start + n * h * w].reshape(n, h, w, channels).permute(0, 3, 1, 2))
        start += n * h * w
    return parts


def forward_together(module: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``module`` applied to every tensor of ``xs`` as if they were one batch: for inputs of one size, the same
    as stacking them (BatchNorm, :func:`batchnorm_together`).

    ``module`` is a torchvision ResNet's body or any part of one: convolutions, BatchNorm, ReLU, max pooling,
    ``nn.Sequential`` and the residual blocks (BasicBlock, Bottleneck).
    """
    if isinstance(module, _BatchNorm):
        return batchnorm_together(module, xs)
    if isinstance(module, nn.Sequential):
        for child in module:
            xs = forward_together(child, xs)
        return xs
    if isinstance(module, (BasicBlock, Bottleneck)):
        identity = xs if module.downsample is None else forward_together(module.downsample, xs)
        convs = [(module.conv1, module.bn1), (module.conv2, module.bn2)]
        if isinstance(module, Bottleneck):
            convs.append((module.conv3, module.bn3))
        out = xs
        for n, (conv, bn) in enumerate(convs):
            out = batchnorm_together(bn, [conv(x) for x in out])
            if n < len(convs) - 1:
                out = [torch.relu(x) for x in out]
        return [torch.relu(x + i) for x, i in zip(out, identity)]
    if isinstance(module, nn.ReLU):
        # Not in place: BatchNorm's outputs are views of one tensor, and one autograd version counter.
        return [torch.relu(x) for x in xs]
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.Identity)):
        return [module(x) for x in xs]
    raise ValueError(f"forward_together does not know how to run {type(module).__name__} on inputs of several sizes")
