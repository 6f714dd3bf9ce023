"""Report aggregation, masked FedAvg and plug-in resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_server.messages import CandidateReport
from fl_server.report_aggregation import (
    AggregatedReport,
    median_of,
    resolve_report_aggregator,
    weighted_mean,
    weighted_median,
)
from fl_server.validation import ClientResult
from fl_server.weight_aggregation import (
    WeightUpdate,
    check_merged_state,
    masked_average,
    masked_fedavg,
    resolve_weight_aggregator,
)
from nas.errors import ReportError
from nas.space import SearchSpace, StageConfig
from nas.supernet import ElasticSupernet


def _result(partition: int, arch, device: str, accuracy: float, latency: float, num_eval: int) -> ClientResult:
    report = CandidateReport(
        id="c0", accuracy=accuracy, loss=1 - accuracy, latency_ms=latency, latency_p10_ms=latency,
        latency_p90_ms=latency, latency_cv=0.0, latency_stable=1.0, pred_accuracy=0.5, pred_latency_ms=2.0,
        num_train=100, num_eval=num_eval, train_s=0.0, measure_s=0.0,
    )
    return ClientResult(partition, partition, device, arch, report)


def test_median_of() -> None:
    assert median_of([1.0, 2.0, 10.0]) == 2.0
    assert median_of([1.0, 3.0]) == 2.0
    assert median_of([1.0, 3.0], [3.0, 1.0]) == 1.0
    assert median_of([5.0, 1.0, 2.0], [1.0, 1.0, 10.0]) == 2.0
    with pytest.raises(ReportError):
        median_of([], [])


def test_weighted_median_resists_outlier() -> None:
    space = SearchSpace.for_task(1, 10, 16)
    arch = space.smallest()
    results = [
        _result(0, arch, "a", 0.80, 1.0, 50),
        _result(1, arch, "a", 0.82, 1.1, 50),
        _result(2, arch, "a", 0.05, 9.0, 40),
        _result(3, arch, "b", 0.70, 3.0, 20),
        _result(4, space.largest(), "a", 0.90, 5.0, 10),
    ]
    merged = weighted_median(results)
    assert [(m.device, m.arch) for m in merged] == [("a", arch), ("b", arch), ("a", space.largest())]
    first = merged[0]
    assert first.accuracy == 0.80
    assert first.latency_ms == 1.1
    assert first.weight == 140
    assert first.num_clients == 3
    mean = weighted_mean(results)[0]
    assert mean.accuracy == pytest.approx((0.8 * 50 + 0.82 * 50 + 0.05 * 40) / 140)
    observation = first.to_observation()
    assert observation.weight == 140
    assert observation.predicted_latency_ms == 2.0
    assert AggregatedReport.from_dict(first.to_dict()) == first


def test_resolve_aggregator_names_and_paths() -> None:
    assert resolve_report_aggregator(None) is weighted_median
    assert resolve_report_aggregator("weighted-mean") is weighted_mean
    assert resolve_report_aggregator("fl_server.report_aggregation:weighted_mean") is weighted_mean
    assert resolve_weight_aggregator("") is masked_fedavg
    assert resolve_weight_aggregator("fl_server.weight_aggregation:masked_fedavg") is masked_fedavg
    with pytest.raises(ReportError, match="no_such_module"):
        resolve_report_aggregator("no_such_module:thing")
    with pytest.raises(ReportError, match="has no attribute"):
        resolve_weight_aggregator("fl_server.weight_aggregation:nothing_here")
    with pytest.raises(ReportError, match="package.module:name"):
        resolve_report_aggregator("just-a-name")


def test_masked_average_on_plain_tensors() -> None:
    current = torch.zeros(4, 4)
    contributions = [
        ((slice(0, 2), slice(0, 2)), torch.full((2, 2), 1.0), 1.0),
        ((slice(0, 4), slice(0, 1)), torch.full((4, 1), 4.0), 3.0),
    ]
    merged = masked_average(current, contributions)
    assert merged[0, 0] == pytest.approx((1 * 1 + 4 * 3) / 4)
    assert merged[0, 1] == 1.0
    assert merged[3, 0] == 4.0
    assert merged[3, 3] == 0.0
    assert current.sum() == 0
    counters = masked_average(torch.tensor(5), [((), torch.tensor(7), 1.0), ((), torch.tensor(2), 1.0)])
    assert counters.item() == 7


def _tiny_space() -> SearchSpace:
    return SearchSpace(
        in_channels=1, num_classes=3, resolution=8,
        stages=(StageConfig(width=8, stride=1), StageConfig(width=8, stride=2, use_se=True, activation="hswish")),
        stem_width=8, head_width=16, depth_choices=(1, 2), kernel_choices=(3, 5), expand_choices=(1, 2),
    )


def test_masked_fedavg_covering_clients_only() -> None:
    space = _tiny_space()
    supernet = ElasticSupernet(space, seed=0)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    small, large = space.smallest(), space.largest()
    small_state = {k: np.full(v.shape, 1.0, np.float32) if v.is_floating_point() else v.numpy()
                   for k, v in supernet.subnet_state(small).items()}
    large_state = {k: np.full(v.shape, 3.0, np.float32) if v.is_floating_point() else v.numpy()
                   for k, v in supernet.subnet_state(large).items()}
    merged = masked_fedavg(supernet, [WeightUpdate(small, small_state, 10.0), WeightUpdate(large, large_state, 30.0)])
    check_merged_state(supernet, merged, "masked-fedavg")
    supernet.load_state_dict(merged)
    shared = supernet.subnet_state(small)
    only_large_key = "stages.0.1.dw.conv.weight"
    assert only_large_key in supernet.subnet_index(large)
    assert only_large_key not in supernet.subnet_index(small)
    np.testing.assert_allclose(shared["stem.conv.weight"].numpy(), 2.5)
    np.testing.assert_allclose(supernet.state_dict()[only_large_key].numpy(), 3.0)
    # 3x3 centre of the 5x5 kernel of block 0 is shared; its border was trained by the large subnet only.
    kernel = supernet.state_dict()["stages.0.0.dw.conv.weight"]
    assert kernel[0, 0, 2, 2].item() == pytest.approx(2.5)
    assert kernel[0, 0, 0, 0].item() == pytest.approx(3.0)
    untouched = [k for k in before if torch.equal(before[k], supernet.state_dict()[k])]
    assert all("num_batches_tracked" in k for k in untouched)


def test_masked_fedavg_rejects_wrong_shapes() -> None:
    space = _tiny_space()
    supernet = ElasticSupernet(space, seed=0)
    state = {k: v.numpy() for k, v in supernet.subnet_state(space.smallest()).items()}
    state["stem.conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ReportError, match="stem.conv.weight"):
        masked_fedavg(supernet, [WeightUpdate(space.smallest(), state, 5.0)])
    with pytest.raises(ReportError, match="keys"):
        check_merged_state(supernet, {"x": torch.zeros(1)}, "custom")
