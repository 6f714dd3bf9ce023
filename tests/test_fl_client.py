"""The ClientApp on real messages, real private data and real ONNX Runtime timing, without a federation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from fl_client.app import app as client_app
from fl_server.app import ServerSettings
from fl_server.messages import ARRAYS, INFO, METRICS, TrainingSettings, decode_instruction, decode_query_reply
from fl_server.run_dir import RunDirectory
from fl_server.strategy import ClientInfo, FederatedNasStrategy
from fl_server.validation import collect_replies

RUN_CONFIG = {"device-profiles": "cpu-1t-fp32,cpu-1t-fp32-noopt"}


@pytest.fixture(autouse=True)
def server_identity():
    """Give this process the identity a ServerApp process gets from Flower, so messages can be built."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 3
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _strategy(tiny_run_dir: Path, tmp_path: Path, privacy: str) -> FederatedNasStrategy:
    settings = ServerSettings(run_dir=tiny_run_dir, output_dir=tmp_path, candidates_per_client=1, privacy=privacy,
                              training=TrainingSettings(max_steps=2, bn_batches=1))
    strategy = FederatedNasStrategy(RunDirectory.load(tiny_run_dir), settings)
    strategy.clients = {101: ClientInfo(101, 1, "cpu-1t-fp32-noopt", 0, 0, 0)}
    return strategy


def _context(node_id: int = 101) -> Context:
    return Context(run_id=7, node_id=node_id, node_config={"partition-id": 1, "num-partitions": 2},
                   state=RecordDict(), run_config=dict(RUN_CONFIG))


@pytest.mark.parametrize("privacy", ["metrics", "weights"])
def test_client_reply_holds_only_metrics_or_sent_weights(tiny_run_dir: Path, tmp_path: Path, privacy: str) -> None:
    strategy = _strategy(tiny_run_dir, tmp_path, privacy)
    (message,) = strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None)
    reply = client_app(message, _context())
    expected = {METRICS, INFO} | ({ARRAYS} if privacy == "weights" else set())
    assert set(reply.content.keys()) == expected
    assert reply.content[INFO]["device"] == "cpu-1t-fp32-noopt"
    assert all(math.isfinite(v) for v in reply.content[METRICS].values())
    if privacy == "weights":
        sent = decode_instruction(message.content)
        returned = {k for k in reply.content[ARRAYS]}
        assert returned == {f"{c.id}/{key}" for c in sent.candidates for key in sent.weights[c.id]}
    results, rejections, _ = collect_replies([reply], strategy._sent, "train", privacy)
    assert rejections == []
    assert len(results) == 1
    report = results[0].report
    assert 0.0 <= report.accuracy <= 1.0
    assert report.latency_ms > 0
    assert report.num_eval >= 1


def test_query_reply_reports_device_and_split_sizes(tiny_run_dir: Path, tmp_path: Path) -> None:
    strategy = _strategy(tiny_run_dir, tmp_path, "metrics")
    from flwr.app import Message, MessageType

    content = RecordDict({"config": ConfigRecord({"data": strategy.data.to_json(),
                                                   "resolution": strategy.space.resolution})})
    query = Message(content, dst_node_id=101, message_type=MessageType.QUERY)
    info = decode_query_reply(client_app(query, _context()).content)
    assert info["device"] == "cpu-1t-fp32-noopt"
    assert info["partition-id"] == 1
    assert min(info["num-train"], info["num-val"], info["num-test"]) >= 1
