"""Standalone subnets: one architecture of a search space as a plain PyTorch model.

A :class:`Subnet` contains only ordinary ``nn.Conv2d``, ``nn.BatchNorm2d``,
``nn.Linear`` and activation modules, so it trains, recalibrates, exports to ONNX
and pickles like any torchvision model. Its structure follows
:meth:`nas.space.SearchSpace.block_layout` exactly, which is what
:mod:`nas.complexity` counts:

* stem: 3x3 conv (``stem_stride``) -> BN -> Hardswish;
* per active block: [1x1 expand conv -> BN -> act, when expand != 1] -> depthwise
  k x k conv (block stride) -> BN -> act -> [squeeze-and-excitation] -> 1x1
  projection conv -> BN, plus an identity shortcut when stride is 1 and the
  channel counts match;
* head: 1x1 conv -> BN -> Hardswish -> global average pool -> linear classifier.

State-dict keys are the same as in :class:`nas.supernet.ElasticSupernet`
(``stem.*``, ``stages.{stage}.{block}.*``, ``head.*``, ``classifier.*``), so a
client can build ``Subnet(space, arch)`` from the architecture alone and load the
weights the server sends with ``load_state_dict``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from nas.space import Architecture, BlockSpec, SearchSpace

__all__ = ["ConvBNAct", "SqueezeExcite", "MBConvBlock", "Subnet", "make_activation", "init_weights"]


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name`` ('relu', 'hswish' or 'none')."""
    if name == "relu":
        return nn.ReLU()
    if name == "hswish":
        return nn.Hardswish()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"activation={name!r} is unknown; use 'relu', 'hswish' or 'none'")


def init_weights(model: nn.Module, seed: Optional[int] = 0) -> None:
    """Initialize ``model`` in place: Kaiming-normal convs (fan-out per group), unit BN, small linear.

    ``seed`` makes the draw deterministic (``None`` uses the global torch RNG). BN
    running statistics are reset. Tensors on the ``meta`` device are skipped.
    """
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.device.type == "meta":
                continue
            if isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(weight, nn.Parameter) and weight.dim() == 4:
                # Kaiming fan-out counted per group, so depthwise kernels are not shrunk by their width.
                depthwise = getattr(module, "depthwise", False)
                groups = weight.shape[0] if depthwise else getattr(module, "groups", 1)
                fan_out = weight.shape[0] // groups * weight.shape[2] * weight.shape[3]
                nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_out), generator=generator)
                bias = getattr(module, "bias", None)
                if isinstance(bias, nn.Parameter):
                    nn.init.zeros_(bias)


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation, with 'same' padding ``kernel // 2``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
        groups: int = 1, activation: str = "relu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: pool -> 1x1 conv -> ReLU -> 1x1 conv -> Hardsigmoid -> scale."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))
        return x * scale


class MBConvBlock(nn.Module):
    """Inverted residual block built from one :class:`nas.space.BlockSpec`."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        mid = spec.mid_channels
        if spec.expand != 1:
            self.expand = ConvBNAct(spec.in_channels, mid, 1, activation=spec.activation)
        self.dw = ConvBNAct(mid, mid, spec.kernel, spec.stride, groups=mid, activation=spec.activation)
        if spec.use_se:
            self.se = SqueezeExcite(mid, spec.se_channels)
        self.project = ConvBNAct(mid, spec.out_channels, 1, activation="none")
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x) if self.spec.expand != 1 else x
        out = self.dw(out)
        if self.spec.use_se:
            out = self.se(out)
        out = self.project(out)
        return out + x if self.residual else out


class Subnet(nn.Module):
    """One architecture of ``space`` as a standalone model (input ``(N, C, R, R)`` -> logits).

    ``seed`` fixes the random initialization (``None`` uses the global torch RNG).
    Raises :class:`nas.errors.InvalidArchitectureError` if ``arch`` is not in ``space``.
    """

    def __init__(self, space: SearchSpace, arch: Architecture, seed: Optional[int] = 0) -> None:
        super().__init__()
        layout = space.block_layout(arch)
        self.space = space
        self.arch = arch
        self.stem = ConvBNAct(space.in_channels, space.stem_width, 3, space.stem_stride, activation="hswish")
        self.stages = nn.ModuleList(
            nn.Sequential(*[MBConvBlock(spec) for spec in layout if spec.stage == stage])
            for stage in range(space.num_stages)
        )
        self.head = ConvBNAct(space.stages[-1].width, space.head_width, 1, activation="hswish")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(space.head_width, space.num_classes)
        init_weights(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.pool(self.head(x))
        return self.classifier(torch.flatten(x, 1))

    def extra_repr(self) -> str:
        return f"arch={self.arch}"
