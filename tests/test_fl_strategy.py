"""The federated NAS strategy on real Flower messages, without a running federation.

The tests build the strategy's messages, decode them as a client would, reply to
them with real reply ``Message`` objects and feed those back, so every branch of
the server logic (validation, aggregation, corrections, weight merging, the final
table, checkpoint and restore) runs quickly and deterministically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message

from fl_server.app import ServerSettings, parse_budgets
from fl_server.messages import CandidateReport, TrainingSettings, decode_instruction, encode_reply
from fl_server.recommendations import recommend_all
from fl_server.run_dir import RunDirectory
from fl_server.strategy import ClientInfo, FederatedNasStrategy
from nas.errors import ApfpError

DEVICES = ("cpu-1t-fp32", "cpu-1t-fp32-noopt")


@pytest.fixture(scope="module")
def run(tiny_run_dir: Path) -> RunDirectory:
    return RunDirectory.load(tiny_run_dir)


@pytest.fixture(autouse=True)
def server_identity():
    """Give this process the identity a ServerApp process gets from Flower, so messages can be built."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 3
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def make_strategy(run: RunDirectory, output: Path, strategy_class=FederatedNasStrategy, **changes):
    settings = ServerSettings(run_dir=run.path, output_dir=output, candidates_per_client=2,
                              training=TrainingSettings(max_steps=2), **changes)
    fresh = RunDirectory.load(run.path)
    strategy = strategy_class(fresh, settings)
    strategy.clients = {
        101: ClientInfo(101, 0, DEVICES[0], 40, 10, 12),
        202: ClientInfo(202, 1, DEVICES[1], 30, 8, 9),
    }
    return strategy


def answer(message: Message, accuracy: float, weights_delta: float | None = None) -> Message:
    """Reply to ``message`` as a well-behaved client would, with made-up measurements."""
    instruction = decode_instruction(message.content)
    reports, weights = [], {}
    for index, candidate in enumerate(instruction.candidates):
        reports.append(CandidateReport(
            id=candidate.id, accuracy=accuracy + 0.01 * index, loss=1.0, latency_ms=1.0 + index,
            latency_p10_ms=0.9, latency_p90_ms=1.1 + index, latency_cv=0.05, latency_stable=1.0,
            pred_accuracy=0.5, pred_latency_ms=1.0, num_train=40, num_eval=10, train_s=0.1, measure_s=0.1,
        ))
        if weights_delta is not None:
            weights[candidate.id] = {
                k: v + weights_delta if np.issubdtype(v.dtype, np.floating) else v
                for k, v in instruction.weights[candidate.id].items()
            }
    returned = weights if weights_delta is not None else None
    content = encode_reply(instruction.kind, instruction.device, reports, returned)
    return Message(content, reply_to=message)


def test_each_client_gets_its_own_message(run: RunDirectory, tmp_path: Path) -> None:
    strategy = make_strategy(run, tmp_path)
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None))
    assert sorted(m.metadata.dst_node_id for m in messages) == [101, 202]
    assert messages[0].content is not messages[1].content
    for message in messages:
        instruction = decode_instruction(message.content)
        device = strategy.clients[message.metadata.dst_node_id].device
        assert instruction.device == device
        assert message.metadata.message_type == "train"
        assert sorted(instruction.surrogates) == ["accuracy", f"latency/{device}"]
        assert len(instruction.candidates) == 2
        for candidate in instruction.candidates:
            expected = strategy.supernet.subnet_state(candidate.arch)
            assert sorted(instruction.weights[candidate.id]) == sorted(expected)


def test_round_corrects_surrogates_merges_weights(run: RunDirectory, tmp_path: Path) -> None:
    strategy = make_strategy(run, tmp_path, privacy="weights")
    before = {k: v.clone() for k, v in strategy.supernet.state_dict().items()}
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None))
    replies = [answer(m, 0.6, weights_delta=1.0) for m in messages]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert metrics["accepted"] == 4
    assert metrics["rejected"] == 0
    assert len(strategy.observations) == 4
    assert strategy.accuracy.num_observations == 4
    assert all(strategy.latency[d].num_observations == 2 for d in DEVICES)
    assert all(o.weight == 10 for o in strategy.observations)
    stem = strategy.supernet.state_dict()["stem.conv.weight"]
    torch.testing.assert_close(stem, before["stem.conv.weight"] + 1.0)
    assert arrays is not None
    assert "stem.conv.weight" in arrays
    quality = strategy._round["surrogate_quality"]
    assert quality["after"]["latency"][DEVICES[0]]["n"] == 2


def test_bad_replies_skip_surrogates(run: RunDirectory, tmp_path: Path) -> None:
    strategy = make_strategy(run, tmp_path)
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None))
    good = answer(messages[0], 0.6)
    failed = Message(Error(code=0, reason="out of memory"), reply_to=messages[1])
    strategy.aggregate_train(1, [good, failed])
    rejections = strategy._round["rejections"]
    assert len(rejections) == 1
    assert "out of memory" in rejections[0]["reason"]
    assert rejections[0]["node_id"] == messages[1].metadata.dst_node_id
    assert len(strategy.observations) == 2

    messages = list(strategy.configure_train(2, ArrayRecord(), ConfigRecord(), None))
    strategy.aggregate_train(2, [answer(messages[0], 1.7)])
    reasons = [r["reason"] for r in strategy._round["rejections"]]
    assert sum("outside [0, 1]" in r for r in reasons) == 2
    assert any("no reply" in r for r in reasons)
    assert len(strategy.observations) == 2


def test_subclass_hooks_replace_aggregators(run: RunDirectory, tmp_path: Path) -> None:
    class Pessimistic(FederatedNasStrategy):
        def aggregate_reports(self, results):
            merged = super().aggregate_reports(results)
            return [type(m)(**{**m.__dict__, "accuracy": 0.0}) for m in merged]

    strategy = make_strategy(run, tmp_path, strategy_class=Pessimistic)
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None))
    strategy.aggregate_train(1, [answer(m, 0.9) for m in messages])
    assert [o.accuracy for o in strategy.observations] == [0.0] * 4


def test_final_table_and_budget_check(run: RunDirectory, tmp_path: Path) -> None:
    strategy = make_strategy(run, tmp_path)
    messages = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None))
    strategy.aggregate_train(1, [answer(m, 0.6) for m in messages])
    budgets = {d: strategy.budgets[d] for d in DEVICES}
    strategy.history["recommendations"] = recommend_all(
        strategy.space, budgets, [o.to_observation() for o in strategy.observations], strategy._objective)
    evaluate = list(strategy.configure_evaluate(1, ArrayRecord(), ConfigRecord(), None))
    assert {m.metadata.message_type for m in evaluate} == {"evaluate"}
    strategy.aggregate_evaluate(1, [answer(m, 0.7) for m in evaluate])
    rows = strategy.history["recommendations"]
    assert len(rows) == sum(len(b) for b in budgets.values())
    for row in rows:
        if row["source"] == "infeasible":
            continue
        assert row["measured_latency_ms"] >= 1.0
        assert row["num_test_samples"] >= 10
        assert row["meets_budget"] == (row["measured_latency_ms"] <= row["budget_ms"] * 1.1)


def test_restore_continues_same_search(run: RunDirectory, tmp_path: Path) -> None:
    first = make_strategy(run, tmp_path, privacy="weights")
    messages = list(first.configure_train(1, ArrayRecord(), ConfigRecord(), None))
    first.aggregate_train(1, [answer(m, 0.6, weights_delta=0.5) for m in messages])
    first.completed_rounds = 1
    first.history["rounds"].append(first._round)
    first._checkpoint()

    second = make_strategy(run, tmp_path, privacy="weights")
    assert second.restore()
    assert second.completed_rounds == 1
    assert [o.to_dict() for o in second.observations] == [o.to_dict() for o in first.observations]
    archs = [o.arch for o in first.observations]
    np.testing.assert_array_equal(second.accuracy.predict(archs).mean, first.accuracy.predict(archs).mean)
    torch.testing.assert_close(second.supernet.state_dict()["stem.conv.weight"],
                               first.supernet.state_dict()["stem.conv.weight"])
    next_first = [decode_instruction(m.content).candidates for m in first.configure_train(2, None, None, None)]
    next_second = [decode_instruction(m.content).candidates for m in second.configure_train(2, None, None, None)]
    assert next_first == next_second

    other = make_strategy(run, tmp_path, privacy="weights", seed=5)
    with pytest.raises(ApfpError, match="seed"):
        other.restore()


def test_settings_from_run_config(tmp_path: Path) -> None:
    settings = ServerSettings.from_run_config({
        "run-dir": str(tmp_path), "num-rounds": 4, "lr": 1, "budgets": '{"cpu-1t-fp32": [3, 1.5]}',
        "privacy": "weights",
    })
    assert settings.num_rounds == 4
    assert settings.training.lr == 1.0
    assert settings.privacy == "weights"
    assert settings.budgets == {"cpu-1t-fp32": (1.5, 3.0)}
    with pytest.raises(ApfpError, match="privacy"):
        ServerSettings.from_run_config({"run-dir": str(tmp_path), "privacy": "everything"})
    with pytest.raises(ApfpError, match="num-rounds"):
        ServerSettings.from_run_config({"run-dir": str(tmp_path), "num-rounds": "3"})
    with pytest.raises(ApfpError, match="run-dir"):
        ServerSettings.from_run_config({})
    with pytest.raises(ApfpError, match="positive numbers"):
        parse_budgets('{"cpu-1t-fp32": [-1]}')
    spec = settings.data_spec({"dataset": "digits", "private_fraction": 0.5, "seed": 3})
    assert (spec.dataset, spec.private_fraction, spec.split_seed) == ("digits", 0.5, 3)
