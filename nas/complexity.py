"""Multiply-accumulate (MAC) and parameter counts of architectures of a search space.

The counts come from :meth:`nas.space.SearchSpace.block_layout` alone, so they are
exact for the models that :mod:`nas.subnet` builds without building one:

* MACs count convolutions and linear layers for ONE input image at
  ``space.resolution`` pixels: a convolution producing ``C_out`` channels on an
  ``H x W`` map with ``C_in / groups`` inputs per output and a ``k x k`` kernel costs
  ``C_out * H * W * (C_in / groups) * k * k``. The SE convolutions run on the
  1 x 1 pooled map. BatchNorm, activations, pooling, the SE multiply and residual
  additions are not counted (they are memory-bound and small).
* Parameters count every trainable tensor: convolution and linear weights, SE and
  classifier biases, and the BatchNorm affine weight and bias (running statistics
  are buffers and are not counted).

:func:`count_macs_of_module` measures the same MAC quantity on any built model with
forward hooks; the tests use it to check the formulas against real subnets.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nas.space import Architecture, BlockSpec, SearchSpace

__all__ = [
    "block_macs",
    "block_params",
    "count_macs",
    "count_params",
    "count_macs_of_module",
    "fixed_macs",
    "fixed_params",
]


def _conv_macs(in_channels: int, out_channels: int, kernel: int, resolution: int, groups: int = 1) -> int:
    return out_channels * resolution * resolution * (in_channels // groups) * kernel * kernel


def _bn_params(channels: int) -> int:
    return 2 * channels


def block_macs(spec: BlockSpec) -> int:
    """Return the MACs of one MBConv block for one image (expand, depthwise, SE, projection)."""
    macs = 0
    if spec.expand != 1:
        macs += _conv_macs(spec.in_channels, spec.mid_channels, 1, spec.in_resolution)
    macs += _conv_macs(spec.mid_channels, spec.mid_channels, spec.kernel, spec.out_resolution, spec.mid_channels)
    if spec.use_se:
        macs += 2 * spec.mid_channels * spec.se_channels
    macs += _conv_macs(spec.mid_channels, spec.out_channels, 1, spec.out_resolution)
    return macs


def block_params(spec: BlockSpec) -> int:
    """Return the parameter count of one MBConv block, BatchNorm affine terms included."""
    params = 0
    if spec.expand != 1:
        params += spec.in_channels * spec.mid_channels + _bn_params(spec.mid_channels)
    params += spec.mid_channels * spec.kernel * spec.kernel + _bn_params(spec.mid_channels)
    if spec.use_se:
        params += spec.mid_channels * spec.se_channels + spec.se_channels
        params += spec.se_channels * spec.mid_channels + spec.mid_channels
    params += spec.mid_channels * spec.out_channels + _bn_params(spec.out_channels)
    return params


def _head_width_in(space: SearchSpace) -> int:
    return space.stages[-1].width


def count_macs(space: SearchSpace, arch: Architecture) -> int:
    """Return the multiply-accumulates of ``arch`` for one image at ``space.resolution``.

    Raises :class:`nas.errors.InvalidArchitectureError` if ``arch`` is not in ``space``.
    """
    return fixed_macs(space) + sum(block_macs(spec) for spec in space.block_layout(arch))


def fixed_macs(space: SearchSpace) -> int:
    """Return the multiply-accumulates every subnet of ``space`` shares: stem, head and classifier."""
    macs = _conv_macs(space.in_channels, space.stem_width, 3, space.stem_resolution)
    macs += _conv_macs(_head_width_in(space), space.head_width, 1, space.final_resolution)
    return macs + space.head_width * space.num_classes


def count_params(space: SearchSpace, arch: Architecture) -> int:
    """Return the number of trainable parameters of ``arch`` (BN affine and biases included).

    Raises :class:`nas.errors.InvalidArchitectureError` if ``arch`` is not in ``space``.
    """
    return fixed_params(space) + sum(block_params(spec) for spec in space.block_layout(arch))


def fixed_params(space: SearchSpace) -> int:
    """Return the parameters every subnet of ``space`` shares: stem, head and classifier."""
    params = space.in_channels * space.stem_width * 9 + _bn_params(space.stem_width)
    params += _head_width_in(space) * space.head_width + _bn_params(space.head_width)
    return params + space.head_width * space.num_classes + space.num_classes


def count_macs_of_module(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Run ``model`` once on zeros and return the MACs of its Conv2d and Linear layers.

    ``input_shape`` is the shape of ONE sample, ``(C, H, W)`` (a leading batch size of
    1 is also accepted). The model runs in eval mode under ``torch.no_grad`` and its
    training flag is restored afterwards. Only ``nn.Conv2d`` and ``nn.Linear`` modules
    are counted; layers that call functional ops directly are invisible to the hooks.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or shape[0] != 1:
        raise ValueError(f"input_shape={tuple(input_shape)!r} is invalid; give (C, H, W) or (1, C, H, W)")
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += output.numel() * (module.in_channels // module.groups) * kernel

    def linear_hook(module: nn.Linear, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        dtype = parameter.dtype if parameter is not None else torch.float32
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(shape, dtype=dtype, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return int(total)
