"""MAC and parameter counts from the architecture match counting on the built subnet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nas.complexity import block_macs, block_params, count_macs, count_macs_of_module, count_params
from nas.errors import InvalidArchitectureError
from nas.space import Architecture, SearchSpace
from nas.subnet import Subnet

SPACES = {
    "gray16": SearchSpace.for_task(1, 10, 16),
    "rgb28": SearchSpace.for_task(3, 5, 28),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run this module on one torch thread, because competing threads stall on a shared 2-core CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _architectures(space: SearchSpace, seed: int, count: int = 5) -> list[Architecture]:
    rng = np.random.default_rng(seed)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(count)]


@pytest.mark.parametrize("name", sorted(SPACES))
def test_counts_match_built_subnet(name: str) -> None:
    torch.manual_seed(0)
    space = SPACES[name]
    for arch in _architectures(space, seed=len(name)):
        subnet = Subnet(space, arch)
        shape = (space.in_channels, space.resolution, space.resolution)
        assert count_macs(space, arch) == count_macs_of_module(subnet, shape), str(arch)
        assert count_params(space, arch) == sum(p.numel() for p in subnet.parameters()), str(arch)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_counts_grow_with_size(name: str) -> None:
    space = SPACES[name]
    small, large = space.smallest(), space.largest()
    assert 0 < count_macs(space, small) < count_macs(space, large)
    assert 0 < count_params(space, small) < count_params(space, large)
    assert sum(block_macs(b) for b in space.block_layout(small)) < count_macs(space, small)
    assert sum(block_params(b) for b in space.block_layout(small)) < count_params(space, small)


def test_block_counts_by_hand() -> None:
    space = SPACES["rgb28"]
    spec = space.block_layout(space.largest())[-1]  # Last block: SE, stride 1, 48 -> 48 channels.
    mid, res, k, se = spec.mid_channels, spec.out_resolution, spec.kernel, spec.se_channels
    assert (mid, res, k) == (288, 2, 7)  # 28 px: stem stride 2 -> 14, then strides 1, 2, 2, 2.
    assert spec.use_se
    expected = 48 * mid * res * res + mid * res * res * k * k + 2 * mid * se + mid * 48 * res * res
    assert block_macs(spec) == expected
    expected_params = 48 * mid + 2 * mid + mid * k * k + 2 * mid + 2 * mid * se + se + mid + mid * 48 + 2 * 48
    assert block_params(spec) == expected_params


def test_module_counter_on_plain_layers() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 8 x 5 x 5 outputs, 27 MACs each.
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # 8 x 5 x 5 outputs, 9 MACs each.
        nn.Flatten(),
        nn.Linear(200, 7),
    )
    assert count_macs_of_module(model, (3, 10, 10)) == 200 * 27 + 200 * 9 + 200 * 7
    assert model.training, "the counter must restore the training flag"
    with pytest.raises(ValueError, match="input_shape"):
        count_macs_of_module(model, (2, 3, 10, 10))


def test_invalid_architecture_is_rejected() -> None:
    space = SPACES["gray16"]
    bad = Architecture((2, 2, 2, 2), ((9, 3),) + ((3, 3),) * 3, ((3, 3),) * 4)
    with pytest.raises(InvalidArchitectureError, match="kernel=9"):
        count_macs(space, bad)
    with pytest.raises(InvalidArchitectureError, match="kernel=9"):
        count_params(space, bad)
