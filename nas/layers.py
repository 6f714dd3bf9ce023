"""Elastic layers of the weight-sharing supernet.

Every layer stores the weights of its largest configuration and, per call, runs a
smaller one by slicing them:

* channels: a layer with ``c`` active channels uses the first ``c`` entries of each
  channel dimension (:meth:`nas.supernet.ElasticSupernet.sort_channels` puts the
  most important channels first);
* kernels: a ``k x k`` depthwise kernel is the centre ``k x k`` crop of the largest
  kernel. This is a deliberate simplification of Once-for-All, which passes the
  crop through a learned kernel-transformation matrix. Without that matrix every
  subnet weight is a plain slice of one supernet tensor. Weights trained by
  clients can therefore be merged back into the supernet slice by slice (masked
  FedAvg), and an extracted subnet contains only copies of supernet entries.

BatchNorm keeps running statistics for the largest channel count. A call with
``c`` channels normalizes with, and in training mode updates, the first ``c``
entries of the shared buffers. Shared statistics fit no single subnet well, so
subnets are BN-recalibrated before evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.space import se_channels

__all__ = [
    "centre_crop_slice",
    "apply_activation",
    "DynamicConv2d",
    "DynamicBatchNorm2d",
    "DynamicSqueezeExcite",
    "ElasticMBConv",
]


def centre_crop_slice(max_kernel: int, kernel: int) -> slice:
    """Return the slice of one spatial axis of a ``max_kernel`` kernel that a ``kernel`` uses."""
    start = (max_kernel - kernel) // 2
    return slice(start, start + kernel)


def apply_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """Apply 'relu', 'hswish' or 'none' (identity) functionally."""
    if name == "relu":
        return F.relu(x)
    if name == "hswish":
        return F.hardswish(x)
    if name == "none":
        return x
    raise ValueError(f"activation={name!r} is unknown; use 'relu', 'hswish' or 'none'")


class DynamicConv2d(nn.Module):
    """Bias-free convolution whose channels (and depthwise kernel) are chosen per call.

    ``depthwise=True`` makes a depthwise conv: weight ``(max_out, 1, K, K)``, and a call
    with ``c`` input channels uses groups ``c`` and the first ``c`` filters. Otherwise
    the weight is ``(max_out, max_in, K, K)`` and a call uses ``weight[:out, :in]``.
    """

    def __init__(
        self, max_in: int, max_out: int, max_kernel: int = 1, stride: int = 1, depthwise: bool = False
    ) -> None:
        super().__init__()
        self.max_in, self.max_out, self.max_kernel = max_in, max_out, max_kernel
        self.stride, self.depthwise = stride, depthwise
        in_per_group = 1 if depthwise else max_in
        self.weight = nn.Parameter(torch.empty(max_out, in_per_group, max_kernel, max_kernel))

    def forward(self, x: torch.Tensor, out_channels: int | None = None, kernel: int | None = None) -> torch.Tensor:
        in_channels = x.shape[1]
        kernel = self.max_kernel if kernel is None else kernel
        crop = centre_crop_slice(self.max_kernel, kernel)
        if self.depthwise:
            weight = self.weight[:in_channels, :, crop, crop]
            groups = in_channels
        else:
            out_channels = self.max_out if out_channels is None else out_channels
            weight = self.weight[:out_channels, :in_channels, crop, crop]
            groups = 1
        return F.conv2d(x, weight, None, self.stride, kernel // 2, 1, groups)

    def extra_repr(self) -> str:
        kind = "depthwise" if self.depthwise else "dense"
        return f"{kind}, max_in={self.max_in}, max_out={self.max_out}, max_kernel={self.max_kernel}, stride={self.stride}"


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d sized for ``max_channels`` that normalizes the first ``C`` channels of its input.

    In training mode it normalizes with batch statistics and updates the first ``C``
    entries of the shared running buffers; ``num_batches_tracked`` counts every call.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or not self.track_running_stats
        running_mean = self.running_mean[:channels] if self.running_mean is not None else None
        running_var = self.running_var[:channels] if self.running_var is not None else None
        return F.batch_norm(
            x, running_mean, running_var, self.weight[:channels], self.bias[:channels],
            use_batch_stats, momentum, self.eps,
        )


class DynamicSqueezeExcite(nn.Module):
    """Squeeze-and-excitation sized for ``max_channels``; ``c`` input channels use ``se_channels(c)`` rows."""

    def __init__(self, max_channels: int, max_squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(max_channels, max_squeeze, 1, bias=True)
        self.expand = nn.Conv2d(max_squeeze, max_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        squeeze = se_channels(channels)
        pooled = F.adaptive_avg_pool2d(x, 1)
        hidden = F.relu(F.conv2d(pooled, self.reduce.weight[:squeeze, :channels], self.reduce.bias[:squeeze]))
        scale = F.hardsigmoid(F.conv2d(hidden, self.expand.weight[:channels, :squeeze], self.expand.bias[:channels]))
        return x * scale


class _ElasticConvBN(nn.Module):
    """A :class:`DynamicConv2d` followed by a :class:`DynamicBatchNorm2d` (keys ``conv``, ``bn``)."""

    def __init__(self, conv: DynamicConv2d) -> None:
        super().__init__()
        self.conv = conv
        self.bn = DynamicBatchNorm2d(conv.max_out)


class ElasticMBConv(nn.Module):
    """Inverted residual block with elastic kernel and expand ratio.

    ``expand_choices`` and ``kernel_choices`` fix the largest sizes; a call runs
    ``forward(x, kernel, expand)`` with ``mid = in_channels * expand`` channels.
    The submodule names match :class:`nas.subnet.MBConvBlock` so state-dict keys line up.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, use_se: bool, activation: str,
        kernel_choices: tuple[int, ...], expand_choices: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.use_se, self.activation = use_se, activation
        self.max_mid = in_channels * max(expand_choices)
        self.has_expand = any(e != 1 for e in expand_choices)
        if self.has_expand:
            self.expand = _ElasticConvBN(DynamicConv2d(in_channels, self.max_mid))
        self.dw = _ElasticConvBN(
            DynamicConv2d(self.max_mid, self.max_mid, max(kernel_choices), stride, depthwise=True)
        )
        if use_se:
            max_squeeze = max(se_channels(in_channels * e) for e in expand_choices)
            self.se = DynamicSqueezeExcite(self.max_mid, max_squeeze)
        self.project = _ElasticConvBN(DynamicConv2d(self.max_mid, out_channels))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        mid = self.in_channels * expand
        out = x
        if expand != 1:
            out = apply_activation(self.expand.bn(self.expand.conv(out, mid)), self.activation)
        out = apply_activation(self.dw.bn(self.dw.conv(out, kernel=kernel)), self.activation)
        if self.use_se:
            out = self.se(out)
        out = self.project.bn(self.project.conv(out))
        return out + x if self.residual else out

    def mid_channel_tensors(self) -> list[tuple[torch.Tensor, int]]:
        """Return every tensor with a mid-channel axis, paired with that axis (for reordering)."""
        tensors: list[tuple[torch.Tensor, int]] = []
        bns = [self.dw.bn]
        if self.has_expand:
            tensors.append((self.expand.conv.weight, 0))
            bns.append(self.expand.bn)
        tensors.append((self.dw.conv.weight, 0))
        for bn in bns:
            tensors.extend((t, 0) for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var))
        if self.use_se:
            tensors.extend([(self.se.reduce.weight, 1), (self.se.expand.weight, 0), (self.se.expand.bias, 0)])
        tensors.append((self.project.conv.weight, 1))
        return tensors
