"""Differential privacy on the weight path: clipping, the noisy masked FedAvg, epsilon, and the client side."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from fl_client.app import app as client_app
from fl_server.app import ServerSettings
from fl_server.dp import DpSettings, clip_update, dp_masked_fedavg, gaussian_epsilon
from fl_server.messages import ARRAYS, CLIPPING_NORM, TrainingSettings, decode_instruction
from fl_server.run_dir import RunDirectory
from fl_server.strategy import ClientInfo, FederatedNasStrategy
from fl_server.weight_aggregation import WeightUpdate, check_merged_state
from nas.errors import ApfpError, ReportError
from nas.space import SearchSpace, StageConfig
from nas.supernet import ElasticSupernet


def test_clip_update_bounds_joint_norm() -> None:
    sent = {"c0": {"w": np.zeros(4, np.float32), "n": np.array(3)}, "c1": {"v": np.ones(2, np.float32)}}
    returned = {"c0": {"w": np.full(4, 2.0, np.float32), "n": np.array(9)}, "c1": {"v": np.array([1.0, 3.0], np.float32)}}
    clipped, norm = clip_update(sent, returned, 1.0)
    assert norm == pytest.approx(math.sqrt(4 * 4.0 + 4.0))
    delta = np.concatenate([clipped["c0"]["w"] - 0.0, clipped["c1"]["v"] - 1.0])
    assert np.linalg.norm(delta) == pytest.approx(1.0, rel=1e-5)
    assert clipped["c0"]["w"].dtype == np.float32
    assert clipped["c0"]["n"] == 9
    assert returned["c0"]["w"][0] == 2.0
    small, norm = clip_update(sent, sent, 1.0)
    assert norm == 0.0
    np.testing.assert_array_equal(small["c1"]["v"], sent["c1"]["v"])
    with pytest.raises(ReportError, match="c1/extra"):
        clip_update(sent, {"c1": {"extra": np.ones(1, np.float32)}}, 1.0)


def _tiny_supernet() -> tuple[SearchSpace, ElasticSupernet]:
    space = SearchSpace(
        in_channels=1, num_classes=3, resolution=8,
        stages=(StageConfig(width=8, stride=1), StageConfig(width=8, stride=2, use_se=True, activation="hswish")),
        stem_width=8, head_width=16, depth_choices=(1, 2), kernel_choices=(3, 5), expand_choices=(1, 2),
    )
    return space, ElasticSupernet(space, seed=0)


def _update(supernet: ElasticSupernet, arch, node: int, step: float) -> WeightUpdate:
    state = {k: v.numpy() + step if v.is_floating_point() else v.numpy() + 5
             for k, v in supernet.subnet_state(arch).items()}
    return WeightUpdate(arch, state, 10.0, node)


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a if a[k].is_floating_point()))


def test_dp_fedavg_sensitivity_and_noise() -> None:
    space, supernet = _tiny_supernet()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    small, large = space.smallest(), space.largest()
    settings = DpSettings(clipping_norm=0.5, noise_multiplier=0.0)
    updates = [_update(supernet, small, 1, 1.0), _update(supernet, large, 1, 1.0), _update(supernet, large, 2, -1.0)]
    merged, record = dp_masked_fedavg(supernet, updates, settings, num_sampled=3)
    check_merged_state(supernet, merged, "dp")
    assert record["num_clients_merged"] == 2
    assert record["clipped_updates"] == 2
    assert record["noise_stdv"] == 0.0
    assert all(norm > 0.5 for norm in record["update_norms"].values())
    without_second, _ = dp_masked_fedavg(supernet, updates[:2], settings, num_sampled=3)
    assert _distance(merged, without_second) <= 0.5 / 3 + 1e-6
    assert _distance(merged, before) > 0
    counters = [k for k in before if not before[k].is_floating_point()]
    assert counters and all(torch.equal(merged[k], before[k]) for k in counters)

    noisy_settings = DpSettings(clipping_norm=0.5, noise_multiplier=2.0)
    noisy, record = dp_masked_fedavg(supernet, updates, noisy_settings, 3, rng=np.random.default_rng(0))
    assert record["noise_stdv"] == pytest.approx(2.0 * 0.5 / 3)
    index = supernet.subnet_index(large)
    noise = torch.cat([(noisy[sk][sl] - merged[sk][sl]).flatten().double() for sk, sl in index.values()
                       if merged[sk].is_floating_point() and not sk.endswith("running_var")])
    assert float(noise.std()) == pytest.approx(record["noise_stdv"], rel=0.1)
    assert all(float(noisy[k].min()) > 0 for k in noisy if k.endswith("running_var"))


def test_epsilon_matches_closed_form() -> None:
    def optimum(z: float, releases: int, delta: float) -> float:
        c, log_term = releases / (2 * z * z), math.log(1 / delta)
        return c + 2 * math.sqrt(c * log_term)

    for z, releases in ((1.0, 1), (2.0, 5), (0.8, 3)):
        assert gaussian_epsilon(z, releases, 1e-5) == pytest.approx(optimum(z, releases, 1e-5), rel=2e-3)
    assert gaussian_epsilon(0.0, 3) is None
    assert gaussian_epsilon(1.0, 0) == 0.0
    assert gaussian_epsilon(1.0, 4) > gaussian_epsilon(1.0, 2) > gaussian_epsilon(2.0, 2)


def test_dp_settings_errors_name_value(tmp_path: Path) -> None:
    with pytest.raises(ApfpError, match="dp-noise-multiplier=1.0 needs dp-clipping-norm > 0"):
        DpSettings(clipping_norm=0.0, noise_multiplier=1.0)
    with pytest.raises(ApfpError, match="dp-clipping-norm=-1"):
        DpSettings(clipping_norm=-1, noise_multiplier=1.0)
    base = {"run-dir": str(tmp_path), "dp-clipping-norm": 1.0}
    with pytest.raises(ApfpError, match="privacy='weights'"):
        ServerSettings.from_run_config(base)
    with pytest.raises(ApfpError, match="weight-aggregator='my.module:fn'"):
        ServerSettings.from_run_config({**base, "privacy": "weights", "weight-aggregator": "my.module:fn"})
    settings = ServerSettings.from_run_config({**base, "privacy": "weights", "dp-noise-multiplier": 0.7})
    assert settings.dp() == DpSettings(1.0, 0.7)


# ------------------------------------------------------------------ client side
@pytest.fixture()
def server_identity():
    """Give this process the identity a ServerApp process gets from Flower, so messages can be built."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 3
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _update_norm(message, reply) -> float:
    instruction = decode_instruction(message.content)
    squares = 0.0
    for key, array in reply.content[ARRAYS].items():
        cid, _, name = key.partition("/")
        value = array.numpy()
        if np.issubdtype(value.dtype, np.floating):
            squares += float(np.sum((value.astype(np.float64) - instruction.weights[cid][name]) ** 2))
    return math.sqrt(squares)


@pytest.mark.usefixtures("server_identity")
@pytest.mark.parametrize("clipping_norm", [0.0, 0.05])
def test_client_clips_its_update(tiny_run_dir: Path, tmp_path: Path, clipping_norm: float) -> None:
    settings = ServerSettings(run_dir=tiny_run_dir, output_dir=tmp_path, candidates_per_client=2, privacy="weights",
                              training=TrainingSettings(max_steps=2, bn_batches=1), dp_clipping_norm=clipping_norm)
    strategy = FederatedNasStrategy(RunDirectory.load(tiny_run_dir), settings)
    strategy.clients = {101: ClientInfo(101, 1, "cpu-1t-fp32-noopt", 0, 0, 0)}
    (message,) = strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None)
    assert (CLIPPING_NORM in message.content["config"]) == (clipping_norm > 0)
    context = Context(run_id=7, node_id=101, node_config={"partition-id": 1, "num-partitions": 2},
                      state=RecordDict(), run_config={"device-profiles": "cpu-1t-fp32,cpu-1t-fp32-noopt"})
    reply = client_app(message, context)
    norm = _update_norm(message, reply)
    if clipping_norm:
        assert norm <= clipping_norm * (1 + 1e-4)
    else:
        assert norm > 0.05, "unclipped training must move the weights further than the clipping norm tested"
