"""Failure injection and how a round copes with failed clients, without a running federation.

The federation-level runs (30% of clients failing for real under Flower's simulation
runtime) are in test_reliability_federation.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message

from fl_client.faults import (
    DISCONNECT_EXIT_CODE, FaultInjector, FaultSettings, InjectedFault, plan_fault, timeout_sleep_s,
)
from fl_server.app import ServerSettings
from fl_server.messages import CandidateReport, TrainingSettings, decode_instruction, encode_reply
from fl_server.run_dir import RunDirectory
from fl_server.strategy import ClientInfo, FederatedNasStrategy
from nas.errors import ApfpError

DEVICES = ("cpu-1t-fp32", "cpu-1t-fp32-noopt")


def test_plan_is_seeded_and_near_rate() -> None:
    settings = FaultSettings(rate=0.3, seed=4)
    plan = {(r, p): plan_fault(settings, r, p) for r in range(1, 51) for p in range(20)}
    assert plan == {(r, p): plan_fault(FaultSettings(rate=0.3, seed=4), r, p) for r, p in plan}
    share = sum(m is not None for m in plan.values()) / len(plan)
    assert 0.25 < share < 0.35
    assert {m for m in plan.values() if m} == {"raise", "timeout", "disconnect"}
    other_seed = {(r, p): plan_fault(FaultSettings(rate=0.3, seed=5), r, p) for r, p in plan}
    assert other_seed != plan


def test_plan_respects_rate_and_modes() -> None:
    assert all(plan_fault(FaultSettings(rate=0.0), r, p) is None for r in range(1, 20) for p in range(10))
    always = FaultSettings(rate=1.0, modes=("raise",))
    assert all(plan_fault(always, r, p) == "raise" for r in range(1, 20) for p in range(10))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"failure-rate": 1.5}, "failure-rate=1.5"),
        ({"failure-rate": "0.3"}, "failure-rate='0.3'"),
        ({"failure-modes": "raise,explode"}, "failure-modes='raise,explode'"),
        ({"failure-modes": ""}, "failure-modes=''"),
        ({"round-timeout": "60"}, "round-timeout='60'"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_fault_settings_errors_name_value(config, message) -> None:
    with pytest.raises(ApfpError, match=message.replace("[", r"\[").replace("(", r"\(")):
        FaultSettings.from_run_config(config)


def test_server_settings_reject_bad_failure_config(tmp_path: Path) -> None:
    with pytest.raises(ApfpError, match="failure-modes"):
        ServerSettings.from_run_config({"run-dir": str(tmp_path), "failure-modes": "raise,hang"})
    settings = ServerSettings.from_run_config({"run-dir": str(tmp_path), "failure-rate": 0.3, "seed": 2,
                                               "round-timeout": 20.0, "min-train-nodes": 2})
    assert settings.faults() == FaultSettings(0.3, ("raise", "timeout", "disconnect"), 2, 20.0)
    assert settings.min_train_nodes == 2
    with pytest.raises(ApfpError, match="min-train-nodes"):
        ServerSettings.from_run_config({"run-dir": str(tmp_path), "min-train-nodes": 0})


def test_injector_raises_and_sleeps() -> None:
    raising = FaultInjector(FaultSettings(rate=1.0, modes=("raise",)), 3, 1, 77)
    with pytest.raises(InjectedFault, match=r"round 3 on node 77 \(partition 1\)"):
        raising.before_work()
    sleeping = FaultInjector(FaultSettings(rate=1.0, modes=("timeout",), round_timeout_s=0.2), 3, 1, 77)
    started = time.monotonic()
    sleeping.before_work()
    assert time.monotonic() - started >= timeout_sleep_s(0.2) > 0.2
    idle = FaultInjector(FaultSettings(rate=0.0), 3, 1, 77)
    idle.before_work()
    idle.after_candidate()


def test_disconnect_exits_own_process() -> None:
    code = ("from fl_client.faults import FaultInjector, FaultSettings\n"
            "injector = FaultInjector(FaultSettings(rate=1.0, modes=('disconnect',)), 1, 0, 5)\n"
            "injector.before_work()\n"
            "injector.after_candidate()\n"
            "print('still running')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == DISCONNECT_EXIT_CODE
    assert "still running" not in done.stdout


# ------------------------------------------------------------- round handling
@pytest.fixture(autouse=True)
def server_identity():
    """Give this process the identity a ServerApp process gets from Flower, so messages can be built."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 3
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def make_strategy(run_dir: Path, output: Path, **changes) -> FederatedNasStrategy:
    settings = ServerSettings(run_dir=run_dir, output_dir=output, candidates_per_client=1,
                              training=TrainingSettings(max_steps=2), **changes)
    strategy = FederatedNasStrategy(RunDirectory.load(run_dir), settings)
    strategy.clients = {
        101: ClientInfo(101, 0, DEVICES[0], 40, 10, 12),
        202: ClientInfo(202, 1, DEVICES[1], 30, 8, 9),
        303: ClientInfo(303, 2, DEVICES[0], 30, 8, 9),
    }
    return strategy


def answer(message: Message, accuracy: float) -> Message:
    """Reply to ``message`` as a well-behaved client would, with made-up measurements."""
    instruction = decode_instruction(message.content)
    reports = [CandidateReport(
        id=c.id, accuracy=accuracy, loss=1.0, latency_ms=1.0, latency_p10_ms=0.9, latency_p90_ms=1.1,
        latency_cv=0.05, latency_stable=1.0, pred_accuracy=0.5, pred_latency_ms=1.0, num_train=40, num_eval=10,
        train_s=0.1, measure_s=0.1) for c in instruction.candidates]
    return Message(encode_reply("train", instruction.device, reports), reply_to=message)


def test_round_below_min_train_nodes_skips_update(tiny_run_dir: Path, tmp_path: Path) -> None:
    strategy = make_strategy(tiny_run_dir, tmp_path, min_train_nodes=2)
    first = list(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None))
    strategy.aggregate_train(1, [answer(m, 0.6) for m in first])
    assert strategy._round["update"] == "applied"
    kept = [o.to_dict() for o in strategy.observations]
    assert len(kept) == 3
    accuracy_text = strategy.accuracy.to_text()

    second = list(strategy.configure_train(2, ArrayRecord(), ConfigRecord(), None))
    search_state = strategy.search.state_dict()
    replies = [answer(second[0], 0.7), Message(Error(code=0, reason="ClientApp raised"), reply_to=second[1])]
    arrays, metrics = strategy.aggregate_train(2, replies)
    record = strategy._round
    assert record["update"] == "skipped"
    assert record["nodes"] == {"sent": 3, "accepted": 1}
    assert record["rejection_counts"] == {"client-error": 1, "no-reply": 1}
    assert len(record["observations"]) == 1
    assert arrays is None
    assert metrics["accepted"] == 1
    assert [o.to_dict() for o in strategy.observations] == kept
    assert strategy.search.state_dict() == search_state
    assert strategy.accuracy.to_text() == accuracy_text


def test_failed_nodes_logged_with_round(tiny_run_dir: Path, tmp_path: Path, caplog) -> None:
    strategy = make_strategy(tiny_run_dir, tmp_path)
    messages = list(strategy.configure_train(3, ArrayRecord(), ConfigRecord(), None))
    failed = Message(Error(code=0, reason="injected failure 'raise'"), reply_to=messages[0])
    strategy.aggregate_train(3, [failed, answer(messages[1], 0.5)])
    assert strategy._round["update"] == "applied"
    assert "rejected reply from node 101 (partition 0) in round 3: client error" in caplog.text
    assert "node 303 (partition 2) sent no reply in round 3 before the timeout" in caplog.text
    assert len(strategy.observations) == 1
