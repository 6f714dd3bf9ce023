"""Supernet training, fine-tuning, BatchNorm recalibration and evaluation on real digits data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nas.data import ArraySplit, load_dataset
from nas.errors import DatasetError
from nas.evaluate import EvalResult, evaluate, evaluate_subnets, per_sample_losses
from nas.export import export_onnx, onnx_parity
from nas.finetune import finetune, make_loader, recalibrate_bn
from nas.space import SearchSpace
from nas.supernet import ElasticSupernet
from nas.train import train_supernet

RESOLUTION = 16
SPACE = SearchSpace.for_task(1, 10, RESOLUTION)
CHANCE = 0.1  # ten balanced classes


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").resized(RESOLUTION)


@pytest.fixture(scope="module")
def trained(digits) -> tuple[ElasticSupernet, list[dict]]:
    """A supernet after a short sandwich-rule training on the digits training split."""
    supernet = ElasticSupernet(SPACE, seed=0)
    history = train_supernet(
        supernet, digits.train, epochs=1, batch_size=32, lr=0.1, num_random=1, seed=0, progress=False
    )
    return supernet, history


def _subset(split: ArraySplit, size: int) -> ArraySplit:
    return ArraySplit(split.x[:size], split.y[:size])


# ------------------------------------------------------------------ loaders
def test_make_loader_order_is_seeded(digits) -> None:
    split = _subset(digits.train, 100)

    def order(seed: int, shuffle: bool = True) -> list[int]:
        loader = make_loader(split, 100, shuffle=shuffle, seed=seed)
        (x, _), = list(loader)
        return [int(np.argmax((split.x.reshape(100, -1) == row.numpy().ravel()).all(1))) for row in x]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert order(1, shuffle=False) == list(range(100))


def test_make_loader_rejects_bad_input(digits) -> None:
    with pytest.raises(DatasetError, match="empty"):
        make_loader(ArraySplit(digits.train.x[:0], digits.train.y[:0]), 8, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        make_loader(digits.train, 0, shuffle=False, seed=0)


# ----------------------------------------------------------------- training
def test_short_training_beats_chance(digits, trained) -> None:
    supernet, history = trained
    assert [record["epoch"] for record in history] == [1]
    assert np.isfinite(history[0]["loss_largest"])
    assert np.isfinite(history[0]["loss_smallest"])
    largest, smallest = evaluate_subnets(
        supernet, [SPACE.largest(), SPACE.smallest()], digits.train, digits.test, progress=False
    )
    assert largest.accuracy > CHANCE + 0.2, largest
    assert smallest.accuracy > CHANCE + 0.2, smallest


@pytest.mark.slow
def test_longer_training_lifts_every_subnet(digits) -> None:
    supernet = ElasticSupernet(SPACE, seed=1)
    history = train_supernet(supernet, digits.train, epochs=5, lr=0.1, seed=1, progress=False, val=digits.val)
    assert history[-1]["loss_largest"] < history[0]["loss_largest"]
    assert history[-1]["val_accuracy_smallest"] > history[0]["val_accuracy_smallest"]
    rng = np.random.default_rng(0)
    archs = [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(4)]
    results = evaluate_subnets(supernet, archs, digits.train, digits.test, progress=False)
    assert results[0].accuracy > CHANCE + 0.5, results[0]
    assert results[1].accuracy > CHANCE + 0.5, results[1]
    assert np.mean([r.accuracy for r in results[2:]]) > CHANCE + 0.4, results[2:]


def test_training_is_seeded(digits) -> None:
    split = _subset(digits.train, 96)

    def run(seed: int) -> dict[str, torch.Tensor]:
        supernet = ElasticSupernet(SPACE, seed=0)
        rng_state = torch.random.get_rng_state()
        train_supernet(supernet, split, epochs=1, batch_size=32, num_random=1, seed=seed, progress=False)
        assert torch.equal(rng_state, torch.random.get_rng_state())
        return supernet.state_dict()

    first, second, other = run(0), run(0), run(1)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


def test_training_hard_labels_with_validation(digits) -> None:
    supernet = ElasticSupernet(SPACE, seed=0)
    history = train_supernet(
        supernet, _subset(digits.train, 64), epochs=1, batch_size=32, num_random=0, distill=False,
        progress=False, val=_subset(digits.val, 50),
    )
    (record,) = history
    assert 0.0 <= record["val_accuracy_largest"] <= 1.0
    assert 0.0 <= record["val_accuracy_smallest"] <= 1.0
    assert record["loss_smallest"] > 0.5  # cross-entropy; a KL divergence to an untrained teacher is near 0
    assert not supernet.training


def test_warmup_sorts_channels_once(digits) -> None:
    class CountingSupernet(ElasticSupernet):
        sorts = 0

        def sort_channels(self) -> None:
            type(self).sorts += 1
            super().sort_channels()

    supernet = CountingSupernet(SPACE, seed=0)
    history = train_supernet(
        supernet, _subset(digits.train, 64), epochs=2, warmup_epochs=1, batch_size=32, num_random=0,
        progress=False,
    )
    assert CountingSupernet.sorts == 1
    assert history[0]["loss_smallest"] is None
    assert history[1]["loss_smallest"] >= 0.0


def test_train_supernet_rejects_bad_settings(digits) -> None:
    with pytest.raises(ValueError, match="epochs=0"):
        train_supernet(ElasticSupernet(SPACE), digits.train, epochs=0, progress=False)
    with pytest.raises(ValueError, match="warmup_epochs=2"):
        train_supernet(ElasticSupernet(SPACE), digits.train, epochs=2, warmup_epochs=2, progress=False)
    with pytest.raises(ValueError, match="num_random=-1"):
        train_supernet(ElasticSupernet(SPACE), digits.train, epochs=1, num_random=-1, progress=False)


# ----------------------------------------------------------- BN recalibration
def test_recalibration_matches_data_statistics(digits, trained) -> None:
    supernet, _ = trained
    subnet = supernet.extract_subnet(SPACE.smallest())
    shared_mean = subnet.stem.bn.running_mean.clone()
    calibration = _subset(digits.train, 128)
    recalibrate_bn(subnet, calibration, num_batches=4, batch_size=32)
    with torch.no_grad():
        stem_out = subnet.stem.conv(torch.from_numpy(calibration.x))
    # Cumulative averaging over four equal batches gives the mean over all 128 samples.
    torch.testing.assert_close(subnet.stem.bn.running_mean, stem_out.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(subnet.stem.bn.running_mean, shared_mean)
    assert all(m.momentum == 0.1 for m in subnet.modules() if isinstance(m, nn.BatchNorm2d))
    assert not subnet.training


def test_recalibration_replaces_shared_statistics(digits, trained) -> None:
    supernet, _ = trained
    for arch in (SPACE.smallest(), SPACE.sample(np.random.default_rng(3))):
        subnet = supernet.extract_subnet(arch)
        before = {k: v.clone() for k, v in subnet.state_dict().items() if k.endswith("running_var")}
        shared = evaluate(subnet, digits.val)
        recalibrate_bn(subnet, digits.train)
        after = subnet.state_dict()
        assert len(before) > 10
        assert all(not torch.allclose(before[k], after[k]) for k in before)
        # Shared statistics mix every subnet, so the subnet's own statistics must not do worse.
        assert evaluate(subnet, digits.val).accuracy >= shared.accuracy - 0.02


def test_recalibrate_bn_is_seeded(digits, trained) -> None:
    supernet, _ = trained
    arch = SPACE.largest()
    first, second, other = (supernet.extract_subnet(arch) for _ in range(3))
    recalibrate_bn(first, digits.train, num_batches=2, seed=5)
    recalibrate_bn(second, digits.train, num_batches=2, seed=5)
    recalibrate_bn(other, digits.train, num_batches=2, seed=6)
    assert torch.equal(first.head.bn.running_var, second.head.bn.running_var)
    assert not torch.equal(first.head.bn.running_var, other.head.bn.running_var)


# -------------------------------------------------------- fine-tune, evaluate
def test_finetune_lowers_loss(digits, trained) -> None:
    supernet, _ = trained
    subnet = supernet.extract_subnet(SPACE.smallest())
    train = _subset(digits.train, 256)
    before = evaluate(subnet, train).loss
    result = finetune(subnet, train, epochs=2, batch_size=32, lr=0.01, seed=0)
    assert result["steps"] == 16
    assert result["samples"] == 512
    assert evaluate(subnet, train).loss < before
    assert not subnet.training
    capped = finetune(supernet.extract_subnet(SPACE.smallest()), train, epochs=3, max_steps=5)
    assert capped["steps"] == 5
    assert capped["samples"] == 160
    assert np.isfinite(capped["loss"])


def test_evaluate_subnets_keeps_supernet(digits, trained) -> None:
    supernet, _ = trained
    state = {k: v.clone() for k, v in supernet.state_dict().items()}
    archs = [SPACE.largest(), SPACE.smallest()]
    results = evaluate_subnets(supernet, archs, digits.train, digits.val, progress=False)
    assert all(torch.equal(state[k], v) for k, v in supernet.state_dict().items())
    subnet = supernet.extract_subnet(archs[1])
    recalibrate_bn(subnet, digits.train)
    assert evaluate(subnet, digits.val) == results[1]


def test_per_sample_losses_match_loss(digits, trained) -> None:
    subnet = trained[0].extract_subnet(SPACE.smallest())
    recalibrate_bn(subnet, digits.train)
    result = evaluate(subnet, digits.val)
    losses = per_sample_losses(subnet, digits.val)
    assert losses.shape == (len(digits.val),)
    assert losses.dtype == np.float64
    assert losses.mean() == pytest.approx(result.loss, rel=1e-5)
    assert result.to_dict() == {
        "accuracy": result.accuracy, "loss": result.loss, "auc": None, "num_samples": len(digits.val)
    }


def test_binary_task_reports_auc(digits) -> None:
    mask = digits.train.y < 2  # zeros against ones form a binary task on real images
    split = ArraySplit(digits.train.x[mask], digits.train.y[mask])
    space = SearchSpace.for_task(1, 2, RESOLUTION)
    supernet = ElasticSupernet(space, seed=0)
    train_supernet(supernet, split, epochs=1, batch_size=32, num_random=0, progress=False)
    subnet = supernet.extract_subnet(space.smallest())
    recalibrate_bn(subnet, split)
    result = evaluate(subnet, split, task="binary")
    assert result.auc is not None
    assert 0.5 < result.auc <= 1.0
    single_class = ArraySplit(split.x[split.y == 0], split.y[split.y == 0])
    assert evaluate(subnet, single_class, task="binary").auc is None


def test_evaluate_rejects_bad_input(digits, trained) -> None:
    subnet = trained[0].extract_subnet(SPACE.smallest())
    with pytest.raises(DatasetError, match="task='regression'"):
        evaluate(subnet, digits.val, task="regression")
    bad = ArraySplit(digits.val.x[:4], np.array([0, 1, 2, 10]))
    with pytest.raises(DatasetError, match="10 outputs"):
        evaluate(subnet, bad)


def test_trained_subnets_onnx_parity(digits, trained) -> None:
    supernet, _ = trained
    inputs = digits.test.x[:5]
    for arch in (SPACE.largest(), SPACE.smallest()):
        subnet = supernet.extract_subnet(arch)
        recalibrate_bn(subnet, digits.train)
        assert isinstance(evaluate(subnet, digits.test), EvalResult)
        assert onnx_parity(subnet, export_onnx(subnet, input_shape=(1, RESOLUTION, RESOLUTION)), inputs) <= 1e-4
