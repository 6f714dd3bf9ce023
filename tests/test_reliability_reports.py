"""Bad client reports: one test per kind, against the validation functions on real Flower records.

Every kind of bad value or structure must be rejected with a reason that names it and
a ``kind`` that the round record counts, while the valid reports of the same reply
(where the structure allows) are kept.
"""

from __future__ import annotations

import json
import math

import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from fl_server.messages import INFO, METRICS, CandidateReport, encode_reply
from fl_server.validation import SentMessage, collect_replies, count_rejections, validate_reply
from nas.space import SearchSpace


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.for_task(1, 10, 16)


@pytest.fixture(autouse=True)
def server_identity():
    """Give this process the identity a ServerApp process gets from Flower, so messages can be built."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 3
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def report(cid: str, **changes: float) -> CandidateReport:
    values = dict(
        accuracy=0.8, loss=0.5, latency_ms=1.2, latency_p10_ms=1.1, latency_p90_ms=1.4, latency_cv=0.05,
        latency_stable=1.0, pred_accuracy=0.7, pred_latency_ms=1.0, num_train=40, num_eval=10, train_s=0.3,
        measure_s=0.2,
    )
    values.update(changes)
    return CandidateReport(id=cid, **values)


def validate(space: SearchSpace, content: RecordDict, kind: str = "train"):
    sent = {"c0": space.smallest(), "c1": space.largest()}
    return validate_reply(content, kind=kind, node_id=11, partition=1, device="cpu-1t-fp32", sent=sent,
                          privacy="metrics", server_round=4)


@pytest.mark.parametrize(
    ("field", "value", "kind", "reason"),
    [
        ("accuracy", math.nan, "non-finite", "non-finite"),
        ("loss", math.inf, "non-finite", "non-finite"),
        ("latency_ms", -math.inf, "non-finite", "non-finite"),
        ("latency_ms", -2.0, "out-of-range", "latency_ms=-2.0"),
        ("latency_p10_ms", -0.1, "out-of-range", "latency_p10_ms"),
        ("accuracy", 1.01, "out-of-range", "outside [0, 1]"),
        ("accuracy", -0.2, "out-of-range", "outside [0, 1]"),
        ("num_eval", 0.0, "out-of-range", "num_eval"),
        ("train_s", -1.0, "out-of-range", "train_s"),
    ],
)
def test_bad_value_rejected_with_kind(space, caplog, field, value, kind, reason) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [report("c0", **{field: value}), report("c1")])
    results, rejections = validate(space, content)
    assert [r.report.id for r in results] == ["c1"]
    assert len(rejections) == 1
    assert rejections[0].candidate == "c0"
    assert rejections[0].kind == kind
    assert reason in rejections[0].reason
    assert "node 11 (partition 1) in round 4" in caplog.text


def test_unknown_candidate_id_rejected(space) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [report("c0"), report("c1"), report("c7")])
    results, rejections = validate(space, content)
    assert [r.report.id for r in results] == ["c0", "c1"]
    assert [(r.candidate, r.kind) for r in rejections] == [("c7", "unknown-candidate")]
    assert "unknown candidate id 'c7'" in rejections[0].reason


def test_duplicated_candidate_id_rejects_reply(space) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [report("c0"), report("c1")])
    content[INFO]["candidates"] = json.dumps(["c0", "c1", "c0"])
    results, rejections = validate(space, content)
    assert results == []
    assert [(r.candidate, r.kind) for r in rejections] == [(None, "malformed")]
    assert "['c0'] more than once" in rejections[0].reason


def test_missing_metric_key_rejected(space) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [report("c0"), report("c1")])
    del content[METRICS]["c0.latency_ms"]
    results, rejections = validate(space, content)
    assert [r.report.id for r in results] == ["c1"]
    assert rejections[0].kind == "missing-field"
    assert "latency_ms" in rejections[0].reason


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: c.__delitem__(METRICS), "MetricRecord 'metrics'"),
        (lambda c: c.__delitem__(INFO), "ConfigRecord 'info'"),
        (lambda c: c[INFO].__delitem__("device"), "'device' is missing"),
        (lambda c: c[METRICS].__delitem__("num-examples"), "num-examples"),
    ],
    ids=["no-metrics", "no-info", "no-device", "no-num-examples"],
)
def test_missing_structure_rejects_reply(space, mutate, reason) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [report("c0"), report("c1")])
    mutate(content)
    results, rejections = validate(space, content)
    assert results == []
    assert [(r.candidate, r.kind) for r in rejections] == [(None, "malformed")]
    assert reason in rejections[0].reason


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: c[METRICS].__setitem__("c0.accuracy", [0.5, 0.6]), "is a list"),
        (lambda c: c[INFO].__setitem__("candidates", 3), "must be str"),
        (lambda c: c[INFO].__setitem__("device", 5), "must be str"),
        (lambda c: c[INFO].__setitem__("candidates", '{"c0": 1}'), "JSON list"),
        (lambda c: c[INFO].__setitem__("candidates", "c0, c1"), "not valid JSON"),
        (lambda c: c.__setitem__(METRICS, ConfigRecord({"c0.accuracy": "high"})), "MetricRecord 'metrics'"),
        (lambda c: c[METRICS].__setitem__("c0.colour", 1.0), "c0.colour"),
    ],
    ids=["list-value", "int-candidates", "int-device", "object-candidates", "text-candidates",
         "config-as-metrics", "unknown-field"],
)
def test_wrong_type_rejects_reply(space, mutate, reason) -> None:
    content = encode_reply("train", "cpu-1t-fp32", [report("c0"), report("c1")])
    mutate(content)
    results, rejections = validate(space, content)
    assert results == []
    assert rejections[0].kind == "malformed"
    assert reason in rejections[0].reason


def test_wrong_device_rejects_reply(space) -> None:
    content = encode_reply("train", "cpu-2t-fp32", [report("c0"), report("c1")])
    results, rejections = validate(space, content)
    assert results == []
    assert rejections[0].kind == "wrong-device"


def test_audit_fields_checked_in_evaluate(space) -> None:
    good = encode_reply("evaluate", "cpu-1t-fp32", [report("c0", mia_auc=0.5, mia_auc_finetuned=0.61)])
    results, rejections = validate(space, good, "evaluate")
    assert rejections[0].kind == "missing-candidate"
    assert results[0].report.mia_auc == 0.5
    assert results[0].report.mia_auc_finetuned == 0.61
    bad = encode_reply("evaluate", "cpu-1t-fp32", [report("c0", mia_auc=1.5), report("c1", mia_auc=math.nan)])
    results, rejections = validate(space, bad, "evaluate")
    assert results == []
    assert sorted(r.kind for r in rejections) == ["non-finite", "out-of-range"]
    in_train = encode_reply("train", "cpu-1t-fp32", [report("c0"), report("c1")])
    in_train[METRICS]["c0.mia_auc"] = 0.5
    _, rejections = validate(space, in_train)
    assert rejections[0].kind == "malformed"


def test_round_counts_every_kind(space) -> None:
    sent = {
        11: SentMessage(1, "cpu-1t-fp32", {"c0": space.smallest(), "c1": space.largest()}),
        12: SentMessage(2, "cpu-1t-fp32", {"c0": space.smallest()}),
        13: SentMessage(3, "cpu-1t-fp32", {"c0": space.smallest()}),
    }
    outbox = [Message(RecordDict({"config": ConfigRecord({"x": 1})}), dst_node_id=n, message_type="train")
              for n in sent]
    bad = encode_reply("train", "cpu-1t-fp32", [report("c0", accuracy=2.0), report("c1", latency_ms=math.inf)])
    replies = [
        Message(bad, reply_to=outbox[0]),
        Message(encode_reply("train", "cpu-1t-fp32", [report("c0")]), reply_to=outbox[0]),
        Message(Error(code=0, reason="ClientApp raised"), reply_to=outbox[1]),
    ]
    results, rejections, _ = collect_replies(replies, sent, "train", "metrics", server_round=2)
    assert results == []
    assert count_rejections(rejections) == {
        "client-error": 1, "no-reply": 1, "duplicate-reply": 1, "non-finite": 1, "out-of-range": 1,
    }
    assert {r.node_id for r in rejections if r.kind == "no-reply"} == {13}


def test_metric_record_rejects_text() -> None:
    # Flower refuses strings in a MetricRecord, so no text can reach the numeric checks.
    with pytest.raises(TypeError):
        MetricRecord({"c0.accuracy": "0.9"})
