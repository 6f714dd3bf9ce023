"""The weight-sharing elastic supernet and the extraction of standalone subnets.

One :class:`ElasticSupernet` stores the weights of the largest architecture of a
:class:`nas.space.SearchSpace`. Every other architecture runs on slices of them
(see :mod:`nas.layers`): the first ``d`` blocks of a stage (elastic depth), the
first ``in_channels * e`` mid channels of a block (elastic expand), and the centre
``k x k`` crop of each depthwise kernel (elastic kernel).

Because every subnet tensor is a slice of one supernet tensor,
:meth:`ElasticSupernet.subnet_index` maps each subnet state-dict key to a
supernet key and an index. That mapping drives extraction
(:meth:`~ElasticSupernet.extract_subnet`, :meth:`~ElasticSupernet.subnet_state`)
and the write-back of trained subnet weights
(:meth:`~ElasticSupernet.load_subnet_state`), which masked weight aggregation
builds on.
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional

import torch
from torch import nn

from nas.errors import InvalidArchitectureError
from nas.layers import ElasticMBConv, centre_crop_slice
from nas.space import Architecture, SearchSpace
from nas.subnet import ConvBNAct, Subnet, init_weights

__all__ = ["ElasticSupernet", "SubnetIndex", "extract_subnet"]

logger = logging.getLogger(__name__)

SubnetIndex = dict[str, tuple[str, tuple[slice, ...]]]
_INDEX_CACHE_SIZE = 512


class ElasticSupernet(nn.Module):
    """Weight-sharing supernet of ``space``; ``forward`` runs the active architecture.

    The active architecture starts as ``space.largest()``; change it with
    :meth:`set_active`. ``seed`` fixes the initialization.
    """

    def __init__(self, space: SearchSpace, seed: Optional[int] = 0) -> None:
        super().__init__()
        self.space = space
        self.stem = ConvBNAct(space.in_channels, space.stem_width, 3, space.stem_stride, activation="hswish")
        stages = []
        for stage, config in enumerate(space.stages):
            blocks = []
            for index in range(space.max_depth):
                in_channels = space.stage_input_channels(stage) if index == 0 else config.width
                blocks.append(
                    ElasticMBConv(
                        in_channels, config.width, config.stride if index == 0 else 1, config.use_se,
                        config.activation, space.kernel_choices, space.expand_choices,
                    )
                )
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.head = ConvBNAct(space.stages[-1].width, space.head_width, 1, activation="hswish")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(space.head_width, space.num_classes)
        init_weights(self, seed)
        self._active = space.largest()
        self._index_cache: dict[Architecture, SubnetIndex] = {}

    # ------------------------------------------------------------ architecture
    @property
    def active(self) -> Architecture:
        """The architecture that :meth:`forward` runs."""
        return self._active

    def set_active(self, arch: Architecture) -> None:
        """Make ``arch`` the active architecture; raise InvalidArchitectureError if it is not in the space."""
        self._active = self.space.validate(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits ``(N, num_classes)`` of the active architecture for ``x`` ``(N, C, R, R)``."""
        arch = self._active
        x = self.stem(x)
        for stage, blocks in enumerate(self.stages):
            for index in range(arch.depths[stage]):
                x = blocks[index](x, arch.kernels[stage][index], arch.expands[stage][index])
        x = self.pool(self.head(x))
        return self.classifier(torch.flatten(x, 1))

    # -------------------------------------------------------------- extraction
    def subnet_index(self, arch: Architecture) -> SubnetIndex:
        """Map every state-dict key of ``Subnet(space, arch)`` to ``(supernet key, index)``.

        ``supernet.state_dict()[key][index]`` is the tensor of that subnet entry: the
        leading entries of each channel axis and the centre of each kernel's spatial
        axes. Parameters and buffers (BN running statistics and counters) are included.
        """
        self.space.validate(arch)
        cached = self._index_cache.get(arch)
        if cached is not None:
            return dict(cached)
        with torch.device("meta"):
            template = Subnet(self.space, arch, seed=None)
        super_shapes = {key: tensor.shape for key, tensor in self.state_dict().items()}
        index: SubnetIndex = {}
        for key, tensor in template.state_dict().items():
            if key not in super_shapes:
                raise RuntimeError(f"subnet key {key!r} has no supernet counterpart; the layer names diverged")
            index[key] = (key, _slice_for(tuple(tensor.shape), tuple(super_shapes[key]), key))
        if len(self._index_cache) >= _INDEX_CACHE_SIZE:
            self._index_cache.clear()
        self._index_cache[arch] = index
        return dict(index)

    def subnet_state(self, arch: Architecture) -> dict[str, torch.Tensor]:
        """Return copies of the supernet entries of ``arch``, keyed like ``Subnet(space, arch).state_dict()``."""
        state = self.state_dict()
        return {
            key: state[super_key][slices].detach().clone()
            for key, (super_key, slices) in self.subnet_index(arch).items()
        }

    def extract_subnet(self, arch: Architecture) -> Subnet:
        """Return a standalone :class:`Subnet` of ``arch`` holding copies of the shared weights.

        The subnet is on the supernet's device and in the supernet's train/eval mode.
        In eval mode its outputs equal the supernet's with ``arch`` active.
        """
        with torch.device("meta"):
            subnet = Subnet(self.space, arch, seed=None)
        reference = next(self.parameters())
        subnet.to_empty(device=reference.device).to(dtype=reference.dtype)
        subnet.load_state_dict(self.subnet_state(arch))
        subnet.train(self.training)
        return subnet

    def load_subnet_state(self, arch: Architecture, state: Mapping[str, torch.Tensor]) -> None:
        """Write a subnet state dict of ``arch`` into the supernet slices it came from.

        Strict: ``state`` must contain exactly the keys of :meth:`subnet_index`, each with the
        subnet's shape and the supernet's dtype; otherwise InvalidArchitectureError names
        the first offending key. Entries of the supernet outside the subnet are unchanged.
        """
        index = self.subnet_index(arch)
        missing = sorted(set(index) - set(state))
        unexpected = sorted(set(state) - set(index))
        if missing or unexpected:
            raise InvalidArchitectureError(
                f"subnet state does not match architecture {arch}: missing keys {missing[:5]}, "
                f"unexpected keys {unexpected[:5]}; send the state of Subnet(space, arch) for this arch"
            )
        target = self.state_dict()
        for key, (super_key, slices) in index.items():
            value = state[key]
            destination = target[super_key][slices]
            if not isinstance(value, torch.Tensor):
                raise InvalidArchitectureError(f"subnet state entry {key!r} is a {type(value).__name__}, not a tensor")
            if tuple(value.shape) != tuple(destination.shape):
                raise InvalidArchitectureError(
                    f"subnet state entry {key!r} has shape {tuple(value.shape)}; architecture {arch} "
                    f"needs {tuple(destination.shape)}"
                )
            if value.dtype != destination.dtype:
                raise InvalidArchitectureError(
                    f"subnet state entry {key!r} has dtype {value.dtype}; the supernet stores {destination.dtype}"
                )
        with torch.no_grad():
            for key, (super_key, slices) in index.items():
                target[super_key][slices].copy_(state[key])

    # --------------------------------------------------------- channel sorting
    def sort_channels(self) -> None:
        """Reorder every block's mid channels by importance, most important first.

        Importance is the L1 norm of the projection conv weights that read a channel.
        All tensors with a mid-channel axis are permuted together, so the largest
        subnet computes the same function. Smaller expand ratios then keep the most
        important channels. When expand ratio 1 is a choice, the first ``in_channels``
        mid channels stay in place (they pair with the block input when the expand
        conv is skipped). Gradients are permuted too.

        NOTE: optimizer state (momentum buffers) is not permuted, so call this before
        building an optimizer or rebuild the optimizer afterwards.
        """
        with torch.no_grad():
            for blocks in self.stages:
                for block in blocks:
                    if not block.has_expand:
                        continue
                    importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
                    fixed = block.in_channels if 1 in self.space.expand_choices else 0
                    tail = torch.argsort(importance[fixed:], descending=True, stable=True) + fixed
                    order = torch.cat([torch.arange(fixed, device=tail.device), tail])
                    for tensor, axis in block.mid_channel_tensors():
                        tensor.copy_(tensor.index_select(axis, order))
                        grad = getattr(tensor, "grad", None)
                        if grad is not None:
                            grad.copy_(grad.index_select(axis, order))
        logger.debug("sorted the mid channels of every block by importance")


def _slice_for(sub_shape: tuple[int, ...], super_shape: tuple[int, ...], key: str) -> tuple[slice, ...]:
    """Leading entries on channel axes; centre crop on the spatial axes of 4-D conv weights."""
    if len(sub_shape) != len(super_shape):
        raise RuntimeError(f"{key!r}: subnet shape {sub_shape} and supernet shape {super_shape} differ in rank")
    slices = []
    for axis, (small, large) in enumerate(zip(sub_shape, super_shape)):
        if small > large:
            raise RuntimeError(f"{key!r}: subnet shape {sub_shape} exceeds supernet shape {super_shape}")
        if len(sub_shape) == 4 and axis >= 2:
            slices.append(centre_crop_slice(large, small))
        else:
            slices.append(slice(0, small))
    return tuple(slices)


def extract_subnet(supernet: ElasticSupernet, arch: Architecture) -> Subnet:
    """Return ``supernet.extract_subnet(arch)``."""
    return supernet.extract_subnet(arch)
