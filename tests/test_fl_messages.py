"""Wire codec and reply validation of the Flower app, on real Flower records."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fl_server import messages
from fl_server.messages import (
    ARRAYS,
    SURROGATES,
    CONFIG,
    INFO,
    METRICS,
    Candidate,
    CandidateReport,
    DataSpec,
    Instruction,
    TrainingSettings,
    decode_instruction,
    decode_query_reply,
    encode_instruction,
    encode_query_reply,
    encode_reply,
    payload_bytes,
)
from fl_server.validation import check_values, validate_reply
from nas.errors import InvalidArchitectureError, ReportError
from nas.space import SearchSpace


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.for_task(1, 10, 16)


def _instruction(space: SearchSpace, **changes) -> Instruction:
    rng = np.random.default_rng(0)
    candidates = (Candidate("c0", space.smallest()), Candidate("c1", space.sample(rng)))
    weights = {
        "c0": {"stem.conv.weight": np.ones((16, 1, 3, 3), np.float32), "stem.bn.num_batches_tracked": np.array(3)}
    }
    fields = dict(
        kind="train", round=2, seed=7, privacy="weights", device="cpu-1t-fp32",
        settings=TrainingSettings(finetune_epochs=1, lr=0.02, batch_size=16, bn_batches=2, max_steps=5),
        space=space, data=DataSpec(dataset="digits"), candidates=candidates,
        surrogates={"accuracy": "header\nbody é", "latency/cpu-1t-fp32": "x" * 1000}, weights=weights,
    )
    fields.update(changes)
    return Instruction(**fields)


def _report(cid: str, **changes) -> CandidateReport:
    values = dict(
        accuracy=0.8, loss=0.5, latency_ms=1.2, latency_p10_ms=1.1, latency_p90_ms=1.4, latency_cv=0.05,
        latency_stable=1.0, pred_accuracy=0.7, pred_latency_ms=1.0, num_train=40, num_eval=10, train_s=0.3,
        measure_s=0.2,
    )
    values.update(changes)
    return CandidateReport(id=cid, **values)


def test_instruction_round_trip(space: SearchSpace) -> None:
    instruction = _instruction(space)
    content = encode_instruction(instruction)
    decoded = decode_instruction(content)
    assert decoded.candidates == instruction.candidates
    assert decoded.surrogates == instruction.surrogates
    assert decoded.settings == instruction.settings
    assert decoded.data == instruction.data
    assert (decoded.round, decoded.seed, decoded.privacy, decoded.device) == (2, 7, "weights", "cpu-1t-fp32")
    np.testing.assert_array_equal(decoded.weights["c0"]["stem.conv.weight"], np.ones((16, 1, 3, 3)))
    counter = decoded.weights["c0"]["stem.bn.num_batches_tracked"]
    assert counter.dtype == np.int64
    assert counter.shape == ()
    assert payload_bytes(content) > 16 * 9 * 4
    # Surrogate texts travel compressed: a repetitive 1000-character text costs far less.
    assert content[SURROGATES]["latency/cpu-1t-fp32"].numpy().size < 100


def test_corrupt_or_oversized_surrogate_rejected(space: SearchSpace, monkeypatch) -> None:
    import zlib

    stream = zlib.compress(b"model text")
    cases = {
        b"plain model text": "is not zlib-compressed text",
        b"": "is empty",
        stream[:-4]: "is truncated: its compressed stream of",
        stream + b"GARBAGE": "has 7 bytes after the end of its compressed stream",
        zlib.compress(b"\xff\xfe"): "is not UTF-8 text after inflating",
    }
    for payload, message in cases.items():
        content = encode_instruction(_instruction(space))
        content[SURROGATES]["accuracy"] = Array(np.frombuffer(payload, dtype=np.uint8).copy())
        with pytest.raises(ReportError, match=f"surrogate 'accuracy' {message}"):
            decode_instruction(content)

    monkeypatch.setattr(messages, "MAX_SURROGATE_BYTES", 999)
    with pytest.raises(ReportError, match="surrogate 'latency/cpu-1t-fp32' has 1000 bytes, above MAX_SURROGATE_BYTES=999"):
        encode_instruction(_instruction(space))
    content = encode_instruction(_instruction(space, surrogates={"accuracy": "header\nbody"}))
    content[SURROGATES]["accuracy"] = Array(np.frombuffer(zlib.compress(b"x" * 1000), dtype=np.uint8).copy())
    with pytest.raises(ReportError, match="surrogate 'accuracy' inflates beyond MAX_SURROGATE_BYTES=999"):
        decode_instruction(content)


def test_each_encoding_is_a_fresh_record(space: SearchSpace) -> None:
    first = encode_instruction(_instruction(space))
    second = encode_instruction(_instruction(space, device="cpu-2t-fp32"))
    assert first[CONFIG] is not second[CONFIG]
    assert first[CONFIG]["device"] == "cpu-1t-fp32"
    assert second[CONFIG]["device"] == "cpu-2t-fp32"


def test_foreign_space_is_rejected(space: SearchSpace) -> None:
    content = encode_instruction(_instruction(space))
    other = SearchSpace.for_task(3, 5, 28)
    config = content[CONFIG]
    config["candidates"] = config["candidates"].replace(space.fingerprint(), other.fingerprint())
    with pytest.raises(InvalidArchitectureError, match="belongs to space"):
        decode_instruction(content)


def test_foreign_weight_key_is_rejected(space: SearchSpace) -> None:
    content = encode_instruction(_instruction(space))
    content[ARRAYS]["c9/stem.conv.weight"] = Array(np.zeros(2, np.float32))
    with pytest.raises(ReportError, match="c9/stem.conv.weight"):
        decode_instruction(content)


def test_query_reply_round_trip() -> None:
    content = encode_query_reply("cpu-1t-int8", 3, {"train": 40, "val": 5, "test": 9})
    assert decode_query_reply(content) == {
        "device": "cpu-1t-int8", "partition-id": 3, "num-train": 40, "num-val": 5, "num-test": 9,
    }
    del content[INFO]["num-test"]
    with pytest.raises(ReportError, match="num-test"):
        decode_query_reply(content)


def _validate(content: RecordDict, space: SearchSpace, privacy: str = "metrics", sent_arrays=None):
    sent = {"c0": space.smallest(), "c1": space.largest()}
    return validate_reply(
        content, kind="train", node_id=11, partition=1, device="cpu-1t-fp32", sent=sent, privacy=privacy,
        sent_arrays=sent_arrays,
    )


def test_valid_reply_is_accepted(space: SearchSpace) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [_report("c0"), _report("c1", accuracy=0.6)])
    results, rejections = _validate(content, space)
    assert rejections == []
    assert [r.report.id for r in results] == ["c0", "c1"]
    assert results[1].report.accuracy == 0.6
    assert results[1].arch == space.largest()
    assert content[METRICS]["num-examples"] == 80


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"accuracy": math.nan}, "non-finite"),
        ({"accuracy": 1.5}, "outside [0, 1]"),
        ({"latency_ms": -3.0}, "latency_ms"),
        ({"pred_latency_ms": 0.0}, "pred_latency_ms"),
        ({"num_eval": 0}, "num_eval"),
        ({"num_train": 2.5}, "num_train"),
        ({"latency_stable": 0.5}, "latency_stable"),
        ({"train_s": -1.0}, "train_s"),
        ({"latency_p10_ms": 2.0}, "exceeds"),
    ],
)
def test_bad_values_reject_only_that_candidate(space: SearchSpace, changes, reason, caplog) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [_report("c0", **changes), _report("c1")])
    results, rejections = _validate(content, space)
    assert [r.report.id for r in results] == ["c1"]
    assert len(rejections) == 1
    assert rejections[0].candidate == "c0"
    assert reason in rejections[0].reason
    assert rejections[0].node_id == 11
    assert "node 11" in caplog.text
    assert reason in caplog.text


def test_unknown_candidate_is_rejected(space: SearchSpace) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [_report("c0"), _report("c1"), _report("zz")])
    results, rejections = _validate(content, space)
    assert len(results) == 2
    assert [(r.candidate, "unknown candidate" in r.reason) for r in rejections] == [("zz", True)]


def test_broken_reply_is_rejected(space: SearchSpace) -> None:
    content = encode_reply("train", "cpu-2t-fp32", [_report("c0")])
    results, rejections = _validate(content, space)
    assert results == []
    assert rejections[0].candidate is None
    assert "device" in rejections[0].reason
    broken = RecordDict({METRICS: MetricRecord({"c0.accuracy": 0.5, "num-examples": 1})})
    results, rejections = _validate(broken, space)
    assert results == []
    assert "malformed" in rejections[0].reason
    odd = encode_reply("train", "cpu-1t-fp32", [_report("c0")])
    odd[METRICS]["c0.color"] = 1.0
    results, rejections = _validate(odd, space)
    assert results == []
    assert "c0.color" in rejections[0].reason


def test_missing_candidate_is_reported(space: SearchSpace) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [_report("c0")])
    results, rejections = _validate(content, space)
    assert len(results) == 1
    assert rejections[0].candidate == "c1"
    assert "missing" in rejections[0].reason


def test_weights_mode_checks_arrays(space: SearchSpace) -> None:
    spec = {"c0": {"w": ("float32", (2, 3))}, "c1": {"w": ("float32", (4,))}}
    good = {"c0": {"w": np.ones((2, 3), np.float32)}, "c1": {"w": np.ones(4, np.float32)}}
    content = encode_reply("train", "cpu-1t-fp32", [_report("c0"), _report("c1")], weights=good)
    results, rejections = _validate(content, space, "weights", spec)
    assert rejections == []
    assert results[0].weights["w"].shape == (2, 3)

    bad = {"c0": {"w": np.ones((3, 2), np.float32)}, "c1": {"w": np.array([1, np.nan, 1, 1], np.float32)}}
    content = encode_reply("train", "cpu-1t-fp32", [_report("c0"), _report("c1")], weights=bad)
    results, rejections = _validate(content, space, "weights", spec)
    assert results == []
    assert "(3, 2)" in rejections[0].reason
    assert "non-finite" in rejections[1].reason

    content = encode_reply("train", "cpu-1t-fp32", [_report("c0"), _report("c1")])
    results, rejections = _validate(content, space, "weights", spec)
    assert results == []
    assert all("no weights" in r.reason for r in rejections)


def test_check_values_lists_missing_fields() -> None:
    assert "missing fields" in check_values({"accuracy": 0.5})


def test_metric_record_rejects_non_numbers() -> None:
    # Flower itself rejects strings in a MetricRecord, so the codec only receives numbers.
    with pytest.raises(TypeError):
        MetricRecord({"c0.accuracy": "high"})
    assert isinstance(ConfigRecord({"a": "b"}), ConfigRecord)
    assert isinstance(ArrayRecord(), ArrayRecord)
