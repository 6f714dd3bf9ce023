"""Nothing received is unpickled or evaluated, and only weights that fit what was sent are merged.

The strategy tests run on real Flower messages without a federation. The source scan
walks the syntax trees of the project's packages.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

from fl_server.app import ServerSettings
from fl_server.messages import (
    ARRAYS, SURROGATES, CandidateReport, TrainingSettings, decode_instruction, encode_reply,
)
from fl_server.run_dir import RunDirectory
from fl_server.strategy import ClientInfo, FederatedNasStrategy
from nas.errors import ReportError

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "surrogate", "hw_profiles", "fl_server", "fl_client", "simulations")
DEVICES = ("cpu-1t-fp32", "cpu-1t-fp32-noopt")


@pytest.fixture(autouse=True)
def server_identity():
    """Give this process the identity a ServerApp process gets from Flower, so messages can be built."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 3
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class _Marker:
    """An object whose unpickling creates a file, to prove that no received pickle runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def pickled_array(marker: Path) -> Array:
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Marker(marker)], dtype=object), allow_pickle=True)
    return Array(dtype="object", shape=(1,), stype="numpy.ndarray", data=buffer.getvalue())


def make_strategy(run_dir: Path, output: Path) -> FederatedNasStrategy:
    settings = ServerSettings(run_dir=run_dir, output_dir=output, candidates_per_client=1, privacy="weights",
                              training=TrainingSettings(max_steps=2))
    strategy = FederatedNasStrategy(RunDirectory.load(run_dir), settings)
    strategy.clients = {101 + i: ClientInfo(101 + i, i, DEVICES[i % 2], 40, 10, 12) for i in range(5)}
    return strategy


def reply_with(message: Message, change) -> Message:
    """Reply with valid metrics and the sent weights plus 1.0, passed through ``change(arrays)``."""
    instruction = decode_instruction(message.content)
    (candidate,) = instruction.candidates
    report = CandidateReport(
        id=candidate.id, accuracy=0.5, loss=1.0, latency_ms=1.0, latency_p10_ms=0.9, latency_p90_ms=1.1,
        latency_cv=0.05, latency_stable=1.0, pred_accuracy=0.5, pred_latency_ms=1.0, num_train=40, num_eval=10,
        train_s=0.1, measure_s=0.1)
    weights = {k: v + 1.0 if np.issubdtype(v.dtype, np.floating) else v
               for k, v in instruction.weights[candidate.id].items()}
    content = encode_reply("train", instruction.device, [report], {candidate.id: weights})
    change(content[ARRAYS], candidate.id)
    return Message(content, reply_to=message)


def test_misfit_weights_not_merged_or_broadcast(tiny_run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    strategy = make_strategy(tiny_run_dir, tmp_path)
    before = {k: v.clone() for k, v in strategy.supernet.state_dict().items()}
    messages = sorted(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None),
                      key=lambda m: m.metadata.dst_node_id)

    def extra_key(arrays, cid):
        arrays[f"{cid}/backdoor.weight"] = Array(np.zeros(3, np.float32))

    def wrong_shape(arrays, cid):
        key = next(k for k in arrays if k.endswith("conv.weight"))
        arrays[key] = Array(np.zeros((1, 1, 1, 1), np.float32))

    def wrong_dtype(arrays, cid):
        key = next(k for k in arrays if k.endswith("conv.weight"))
        arrays[key] = Array(arrays[key].numpy().astype(np.float64))

    def missing_key(arrays, cid):
        del arrays[next(k for k in arrays if k.endswith("running_mean"))]

    def pickle_payload(arrays, cid):
        arrays[next(k for k in arrays if k.endswith("conv.weight"))] = pickled_array(marker)

    changes = (extra_key, wrong_shape, wrong_dtype, missing_key, pickle_payload)
    replies = [reply_with(m, change) for m, change in zip(messages, changes)]
    arrays, metrics = strategy.aggregate_train(1, replies)

    reasons = [r["reason"] for r in strategy._round["rejections"]]
    assert metrics["accepted"] == 0
    assert strategy._round["rejection_counts"] == {"weights": 5}
    assert "unexpected ['backdoor.weight']" in reasons[0]
    assert "(1, 1, 1, 1)" in reasons[1]
    assert "float64" in reasons[2]
    assert "missing" in reasons[3]
    assert "cannot be read" in reasons[4]
    assert not marker.exists(), "a received pickle was executed"
    assert arrays is None
    after = strategy.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    following = list(strategy.configure_train(2, ArrayRecord(), ConfigRecord(), None))
    for message in following:
        instruction = decode_instruction(message.content)
        for candidate in instruction.candidates:
            expected = strategy.supernet.subnet_state(candidate.arch)
            for key, value in instruction.weights[candidate.id].items():
                np.testing.assert_array_equal(value, expected[key].numpy())


def test_one_good_update_merged_alone(tiny_run_dir: Path, tmp_path: Path) -> None:
    strategy = make_strategy(tiny_run_dir, tmp_path)
    before = strategy.supernet.state_dict()["stem.conv.weight"].clone()
    messages = sorted(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None),
                      key=lambda m: m.metadata.dst_node_id)

    def nothing(arrays, cid):
        return None

    def wrong_dtype(arrays, cid):
        arrays[f"{cid}/stem.conv.weight"] = Array(arrays[f"{cid}/stem.conv.weight"].numpy().astype(np.float16))

    arrays, metrics = strategy.aggregate_train(1, [reply_with(messages[0], nothing), reply_with(messages[1], wrong_dtype)])
    assert metrics["accepted"] == 1
    assert arrays is not None
    torch.testing.assert_close(strategy.supernet.state_dict()["stem.conv.weight"], before + 1.0)


def test_pickled_surrogate_not_loaded(tiny_run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    strategy = make_strategy(tiny_run_dir, tmp_path)
    message = next(iter(strategy.configure_train(1, ArrayRecord(), ConfigRecord(), None)))
    message.content[SURROGATES]["accuracy"] = pickled_array(marker)
    with pytest.raises((ReportError, ValueError)):
        decode_instruction(message.content)
    assert not marker.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def test_source_never_unpickles_or_evaluates() -> None:
    banned_modules = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
    problems = []
    files = [p for package in PACKAGES for p in sorted((REPO_ROOT / package).rglob("*.py"))]
    assert len(files) > 40
    for path in files:
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        where = path.relative_to(REPO_ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in banned_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
                problems.append(f"{where}: from {node.module} import")
        for call in _calls(tree):
            name = _dotted(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            if name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where}:{call.lineno}: {name}()")
            if name == "torch.load":
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                flag = keywords.get("allow_pickle")
                if isinstance(flag, ast.Constant) and flag.value is True:
                    problems.append(f"{where}:{call.lineno}: np.load with allow_pickle=True")
            if name in ("yaml.load", "yaml.unsafe_load"):
                problems.append(f"{where}:{call.lineno}: {name}")
    assert problems == []
