"""Elastic supernet: subnet parity, state mapping, write-back, channel sorting, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.errors import InvalidArchitectureError
from nas.space import Architecture, SearchSpace
from nas.subnet import Subnet
from nas.supernet import ElasticSupernet, extract_subnet

SPACES = {
    "gray16": SearchSpace.for_task(1, 10, 16),
    "rgb28": SearchSpace.for_task(3, 5, 28),
}
TOLERANCE = 1e-5
# Outputs must vary across inputs by far more than TOLERANCE, or a parity check proves nothing.
MIN_SPREAD = 100 * TOLERANCE


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run this module on one torch thread, because competing threads stall on a shared 2-core CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _batch(space: SearchSpace, n: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (n, space.in_channels, space.resolution, space.resolution)
    return torch.randn(shape, generator=generator) * 2.0 + 0.5


def _warmed_supernet(space: SearchSpace, steps: int = 4) -> ElasticSupernet:
    """Build a supernet whose BN statistics, weights and biases moved away from their initial values."""
    net = ElasticSupernet(space, seed=1)
    rng = np.random.default_rng(3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    for step in range(steps):
        net.set_active(space.largest() if step == 0 else space.sample(rng))
        loss = F.cross_entropy(net(_batch(space, n=8, seed=step)), torch.arange(8) % space.num_classes)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    # Biases start at zero and barely move in a few steps, so perturb them to make them matter.
    generator = torch.Generator().manual_seed(17)
    with torch.no_grad():
        for parameter in net.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    net.eval()
    return net


def _calibrate(net: ElasticSupernet, arch: Architecture, space: SearchSpace) -> None:
    """Set the shared BN statistics of the slices of ``arch`` to those of one batch (momentum 1)."""
    net.set_active(arch)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    net.train()
    with torch.no_grad():
        net(_batch(space, n=16, seed=123))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.eval()


def _spread(output: torch.Tensor) -> float:
    return output.std(dim=0).max().item()


def _architectures(space: SearchSpace, seed: int = 11, count: int = 4) -> list[Architecture]:
    rng = np.random.default_rng(seed)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(count)]


@pytest.fixture(scope="module", params=sorted(SPACES))
def warmed(request: pytest.FixtureRequest) -> tuple[SearchSpace, ElasticSupernet]:
    space = SPACES[request.param]
    return space, _warmed_supernet(space)


def test_extracted_subnet_matches_supernet(warmed: tuple[SearchSpace, ElasticSupernet]) -> None:
    space, net = warmed
    assert int(net.stem.bn.num_batches_tracked) == 4
    assert net.stem.bn.running_mean.abs().sum() > 0, "BN statistics should be non-trivial"

    x = _batch(space, seed=99)
    archs = _architectures(space)
    for position, arch in enumerate(archs):
        _calibrate(net, arch, space)
        subnet = extract_subnet(net, arch)
        other = net.extract_subnet(archs[position - 1])
        with torch.no_grad():
            expected, actual, wrong = net(x), subnet(x), other(x)

        assert isinstance(subnet, Subnet)
        assert subnet.arch == arch
        assert subnet.space == space
        assert not subnet.training
        assert torch.isfinite(actual).all()
        assert _spread(expected) > MIN_SPREAD, str(arch)
        assert (expected - actual).abs().max().item() <= TOLERANCE, str(arch)
        assert (expected - wrong).abs().max().item() > 1e-3, "another architecture must give other outputs"


def test_standalone_subnet_loads_state(warmed: tuple[SearchSpace, ElasticSupernet]) -> None:
    space, net = warmed
    x = _batch(space, seed=4)
    for arch in _architectures(space, seed=5, count=2):
        index = net.subnet_index(arch)
        standalone = Subnet(space, arch, seed=7)
        assert set(standalone.state_dict()) == set(index)
        assert any(key.endswith("num_batches_tracked") for key in index)
        assert any(key.endswith("running_var") for key in index)

        _calibrate(net, arch, space)
        standalone.load_state_dict(net.subnet_state(arch), strict=True)
        with torch.no_grad():
            expected, actual = net(x), standalone.eval()(x)
        assert _spread(expected) > MIN_SPREAD, str(arch)
        assert (actual - expected).abs().max().item() <= TOLERANCE, str(arch)


def test_subnet_index_slices() -> None:
    space = SPACES["gray16"]
    net = ElasticSupernet(space)
    arch = space.smallest()  # depth 2, kernel 3 and expand 3 in every block
    index = net.subnet_index(arch)
    key, slices = index["stages.1.0.dw.conv.weight"]
    mid = space.stages[0].width * 3
    assert key == "stages.1.0.dw.conv.weight"
    assert slices == (slice(0, mid), slice(0, 1), slice(2, 5), slice(2, 5))
    assert not any(k.startswith("stages.0.2.") for k in index)

    subnet = net.extract_subnet(arch)
    full = net.state_dict()["stages.1.0.dw.conv.weight"]
    assert torch.equal(subnet.state_dict()["stages.1.0.dw.conv.weight"], full[:mid, :, 2:5, 2:5])


def test_train_bn_updates_active_slice() -> None:
    space = SPACES["rgb28"]
    net = ElasticSupernet(space)
    net.set_active(space.smallest())
    bn = net.stages[2][0].dw.bn
    inactive = net.stages[2][3].dw.bn
    before = bn.running_mean.clone()
    mid = space.stages[1].width * space.expand_choices[0]

    net.train()
    net(_batch(space, n=4))
    assert not torch.equal(bn.running_mean[:mid], before[:mid])
    assert torch.equal(bn.running_mean[mid:], before[mid:])
    assert int(bn.num_batches_tracked) == 1
    assert torch.equal(inactive.running_mean, torch.zeros_like(inactive.running_mean))
    assert int(inactive.num_batches_tracked) == 0


@pytest.mark.parametrize("name", sorted(SPACES))
def test_load_subnet_state_round_trip(name: str) -> None:
    space = SPACES[name]
    net = _warmed_supernet(space, steps=2)
    arch = _architectures(space, seed=21, count=1)[-1]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    generator = torch.Generator().manual_seed(5)
    trained = {}
    for key, value in net.subnet_state(arch).items():
        if key.endswith("running_var"):
            trained[key] = value * 2.0 + 0.1
        elif value.is_floating_point():
            trained[key] = value + 0.1 * torch.randn(value.shape, generator=generator)
        else:
            trained[key] = value + 3

    net.load_subnet_state(arch, trained)
    for key, value in net.subnet_state(arch).items():
        assert torch.equal(value, trained[key]), key

    touched = {k: torch.zeros_like(v, dtype=torch.bool) for k, v in before.items()}
    for super_key, slices in net.subnet_index(arch).values():
        touched[super_key][slices] = True
    after = net.state_dict()
    for key, mask in touched.items():
        assert torch.equal(after[key][~mask], before[key][~mask]), f"{key} changed outside the subnet"
        if mask.any() and before[key].is_floating_point():
            assert not torch.equal(after[key][mask], before[key][mask]), key

    smaller = space.smallest()
    net.set_active(smaller)
    with torch.no_grad():
        expected, actual = net(_batch(space)), net.extract_subnet(smaller)(_batch(space))
    assert torch.isfinite(actual).all()
    assert (expected - actual).abs().max() <= TOLERANCE


def test_load_subnet_state_rejects_mismatches() -> None:
    space = SPACES["gray16"]
    net = ElasticSupernet(space)
    arch = space.smallest()
    good = net.subnet_state(arch)

    missing = dict(good)
    del missing["classifier.bias"]
    with pytest.raises(InvalidArchitectureError, match="classifier.bias"):
        net.load_subnet_state(arch, missing)

    wrong_shape = dict(good, **{"stages.0.0.dw.conv.weight": torch.zeros(48, 1, 5, 5)})
    with pytest.raises(InvalidArchitectureError, match=r"stages\.0\.0\.dw\.conv\.weight"):
        net.load_subnet_state(arch, wrong_shape)

    wrong_dtype = dict(good, **{"head.bn.weight": good["head.bn.weight"].double()})
    with pytest.raises(InvalidArchitectureError, match=r"head\.bn\.weight.*float64"):
        net.load_subnet_state(arch, wrong_dtype)

    with pytest.raises(InvalidArchitectureError, match="missing keys"):
        net.load_subnet_state(space.largest(), good)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_sort_channels_keeps_largest_output(name: str) -> None:
    space = SPACES[name]
    net = _warmed_supernet(space, steps=3)
    x = _batch(space, seed=8)
    _calibrate(net, space.largest(), space)
    small_before = net.subnet_state(space.smallest())
    with torch.no_grad():
        before = net(x)
        net.sort_channels()
        after = net(x)

    assert _spread(before) > MIN_SPREAD
    assert (before - after).abs().max().item() <= TOLERANCE
    small_after = net.subnet_state(space.smallest())
    for key in ("stages.0.0.project.conv.weight", "stages.3.1.se.reduce.weight", "stages.2.0.expand.bn.running_var"):
        assert not torch.equal(small_before[key], small_after[key]), f"{key}: smaller expand should keep other channels"
    for blocks in net.stages:
        for block in blocks:
            importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(importance[:-1] >= importance[1:])


def test_set_active_validates() -> None:
    space = SPACES["gray16"]
    net = ElasticSupernet(space)
    assert net.active == space.largest()
    bad_expand = Architecture((2,) * 4, ((3, 3),) * 4, ((3, 5),) + ((3, 3),) * 3)
    with pytest.raises(InvalidArchitectureError, match="expand=5"):
        net.set_active(bad_expand)
    with pytest.raises(InvalidArchitectureError, match="stages"):
        net.set_active(Architecture((2,), ((3, 3),), ((3, 3),)))
    with pytest.raises(InvalidArchitectureError, match="expand=5"):
        net.extract_subnet(bad_expand)
    assert net.active == space.largest()


def test_seeded_init_is_deterministic() -> None:
    space = SPACES["gray16"]
    first, second, other = (ElasticSupernet(space, seed=s) for s in (3, 3, 4))
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert not torch.equal(first.classifier.weight, other.classifier.weight)


def test_gradients_reach_only_active_slice() -> None:
    space = SPACES["gray16"]
    net = ElasticSupernet(space)
    net.set_active(space.smallest())
    net(_batch(space)).square().sum().backward()
    dw = net.stages[0][0].dw.conv.weight
    mid = space.stem_width * space.expand_choices[0]
    outside = dw.grad.clone()
    outside[:mid, :, 2:5, 2:5] = 0
    assert dw.grad[:mid, :, 2:5, 2:5].abs().sum() > 0
    assert outside.abs().sum() == 0
    assert net.stages[0][3].dw.conv.weight.grad is None


def test_expand_one_blocks_skip_expand_conv() -> None:
    base = SearchSpace.for_task(1, 4, 12)
    space = SearchSpace(
        in_channels=1, num_classes=4, resolution=12, stages=base.stages[:2],
        depth_choices=(1, 2), kernel_choices=(3, 5), expand_choices=(1, 3),
    )
    net = _warmed_supernet(space, steps=2)
    x = _batch(space, seed=6)
    arch = space.smallest()  # expand 1 everywhere, so no expand conv runs
    subnet = net.extract_subnet(arch)
    assert not any(".expand.conv." in key for key in subnet.state_dict())

    _calibrate(net, arch, space)
    with torch.no_grad():
        expected = net(x)
        actual = net.extract_subnet(arch)(x)
        net.sort_channels()
        after_sort = net(x)
    assert _spread(expected) > MIN_SPREAD
    assert (expected - actual).abs().max().item() <= TOLERANCE
    assert (expected - after_sort).abs().max().item() <= TOLERANCE, "sorting must keep the expand-1 channels"
