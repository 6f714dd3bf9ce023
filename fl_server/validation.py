"""Validation of client replies: only checked results reach the surrogates and the supernet.

:func:`validate_reply` decodes one reply and checks every candidate report on its
own: known candidate id, every field present and finite, accuracy in [0, 1],
latencies and predicted latency > 0, sample counts >= 1 and whole, durations >= 0,
and (evaluate replies) membership-inference AUCs in [0, 1]. In the ``weights``
privacy mode the returned arrays must carry exactly the keys, shapes and dtypes that
were sent, with finite values. A broken reply structure (missing records or keys,
wrong types, a candidate id listed twice) or a wrong device rejects the whole reply.
A bad candidate rejects only that candidate. Every rejection is logged with the node
id, the round and the reason, and returned as a :class:`Rejection` whose ``kind``
(one of :data:`REJECTION_KINDS`) the round record counts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
from flwr.app import Message, RecordDict

from nas.errors import ReportError
from nas.space import Architecture
from fl_server.messages import AUDIT_FIELDS, REPORT_FIELDS, CandidateReport, decode_reply, payload_bytes

logger = logging.getLogger(__name__)

#: (dtype name, shape) of every array sent for one candidate, keyed by subnet state key.
ArraySpec = Mapping[str, tuple[str, tuple[int, ...]]]

#: Rejection kinds. ``client-error`` is a client that raised or an error reported by
#: Flower, and ``no-reply`` a node whose reply did not arrive before the round timeout.
REJECTION_KINDS = (
    "client-error", "no-reply", "duplicate-reply", "malformed", "wrong-device", "unknown-candidate",
    "missing-candidate", "missing-field", "non-finite", "out-of-range", "weights",
)
FAILURE_KINDS = ("client-error", "no-reply")


@dataclass(frozen=True)
class Rejection:
    """A rejected reply (``candidate`` None) or candidate report, with the reason and its kind."""

    node_id: int
    partition: int
    candidate: str | None
    reason: str
    kind: str = "malformed"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ClientResult:
    """One accepted candidate report of one client; ``weights`` only in the ``weights`` mode."""

    node_id: int
    partition: int
    device: str
    arch: Architecture
    report: CandidateReport
    weights: Mapping[str, np.ndarray] | None = None


def validate_reply(
    content: RecordDict,
    *,
    kind: str,
    node_id: int,
    partition: int,
    device: str,
    sent: Mapping[str, Architecture],
    privacy: str,
    sent_arrays: Mapping[str, ArraySpec] | None = None,
    server_round: int | None = None,
) -> tuple[list[ClientResult], list[Rejection]]:
    """Return the accepted results and the rejections of one reply.

    ``sent`` maps the candidate ids sent to this client to their architectures;
    ``sent_arrays`` describes the arrays sent per candidate (needed in the
    ``weights`` mode of train replies). ``server_round`` only labels the log records.
    """
    where = f" in round {server_round}" if server_round is not None else ""

    def reject(candidate: str | None, reason: str, why: str) -> Rejection:
        logger.warning(
            "rejected %s from node %d (partition %d)%s: %s",
            f"report of candidate {candidate!r}" if candidate else "reply", node_id, partition, where, reason,
        )
        return Rejection(node_id, partition, candidate, reason, why)

    try:
        reply = decode_reply(content, kind)
    except (ReportError, ValueError, TypeError) as error:
        return [], [reject(None, f"malformed reply: {error}", "malformed")]
    if reply.device != device:
        return [], [reject(None, f"reply is from device {reply.device!r}, but this node reported {device!r}",
                           "wrong-device")]
    if not math.isfinite(reply.num_examples) or reply.num_examples < 0:
        return [], [reject(None, f"num-examples={reply.num_examples!r} is not a finite count >= 0", "non-finite"
                           if not math.isfinite(reply.num_examples) else "out-of-range")]
    wants_weights = privacy == "weights" and kind == "train"
    if reply.weights is not None and not wants_weights:
        logger.warning("node %d returned weights that the privacy mode does not request; they are discarded", node_id)

    results, rejections = [], []
    for cid in sorted(set(reply.metrics) | set(reply.candidate_ids)):
        if cid not in sent:
            rejections.append(reject(cid, f"unknown candidate id {cid!r}; sent ids: {sorted(sent)}",
                                     "unknown-candidate"))
            continue
        if cid not in reply.metrics:
            rejections.append(reject(cid, "listed in the reply but has no metrics", "missing-field"))
            continue
        problem = find_problem(reply.metrics[cid])
        weights = None
        if problem is None and wants_weights:
            returned = (reply.weights or {}).get(cid)
            spec = (sent_arrays or {}).get(cid, {})
            reason, weights = _check_arrays(returned, spec)
            problem = None if reason is None else ("weights", reason)
        if problem is not None:
            rejections.append(reject(cid, problem[1], problem[0]))
            continue
        values = reply.metrics[cid]
        report = CandidateReport(id=cid, **{name: values[name] for name in REPORT_FIELDS},
                                 **{name: values[name] for name in AUDIT_FIELDS if name in values})
        results.append(ClientResult(node_id, partition, device, sent[cid], report, weights))
    for cid in sorted(set(sent) - set(reply.metrics) - set(reply.candidate_ids)):
        rejections.append(reject(cid, "sent to the client but missing from its reply", "missing-candidate"))
    return results, rejections


def check_values(values: Mapping[str, float]) -> str | None:
    """Return why one candidate's metric values are invalid, or None if they are valid."""
    problem = find_problem(values)
    return None if problem is None else problem[1]


def find_problem(values: Mapping[str, float]) -> tuple[str, str] | None:
    """Return ``(kind, reason)`` for invalid metric values of one candidate, or None if they are valid."""
    missing = [name for name in REPORT_FIELDS if name not in values]
    if missing:
        return "missing-field", f"missing fields {missing}"
    present = [name for name in REPORT_FIELDS + AUDIT_FIELDS if name in values]
    bad = [name for name in present if not math.isfinite(values[name])]
    if bad:
        return "non-finite", f"non-finite values in {bad}: {[values[n] for n in bad]}"
    for name in ("accuracy",) + tuple(n for n in AUDIT_FIELDS if n in values):
        if not 0.0 <= values[name] <= 1.0:
            return "out-of-range", f"{name}={values[name]!r} is outside [0, 1]"
    for name in ("latency_ms", "latency_p10_ms", "latency_p90_ms", "pred_latency_ms"):
        if values[name] <= 0:
            return "out-of-range", f"{name}={values[name]!r} is not a positive latency in ms"
    if values["latency_p10_ms"] > values["latency_p90_ms"]:
        return "out-of-range", (f"latency_p10_ms={values['latency_p10_ms']!r} exceeds "
                                f"latency_p90_ms={values['latency_p90_ms']!r}")
    for name in ("loss", "latency_cv", "train_s", "measure_s"):
        if values[name] < 0:
            return "out-of-range", f"{name}={values[name]!r} is negative"
    if values["latency_stable"] not in (0.0, 1.0):
        return "out-of-range", f"latency_stable={values['latency_stable']!r} is not 0 or 1"
    for name in ("num_train", "num_eval"):
        if values[name] < 1 or values[name] != int(values[name]):
            return "out-of-range", f"{name}={values[name]!r} is not a whole sample count >= 1"
    return None


def _check_arrays(
    returned: Mapping[str, Any] | None, spec: ArraySpec
) -> tuple[str | None, dict[str, np.ndarray] | None]:
    if not returned:
        return "weights mode: the reply carries no weights for this candidate", None
    missing, unexpected = sorted(set(spec) - set(returned)), sorted(set(returned) - set(spec))
    if missing or unexpected:
        return f"returned weight keys differ from those sent: missing {missing[:3]}, unexpected {unexpected[:3]}", None
    arrays = {}
    for key, (dtype, shape) in spec.items():
        try:
            value = returned[key].numpy()
        except (TypeError, ValueError) as error:
            return f"weight {key!r} cannot be read: {error}", None
        if str(value.dtype) != dtype or tuple(value.shape) != tuple(shape):
            return f"weight {key!r} is {value.dtype}{tuple(value.shape)}; sent {dtype}{tuple(shape)}", None
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            return f"weight {key!r} contains non-finite values", None
        arrays[key] = value
    return None, arrays


@dataclass
class SentMessage:
    """Record of the message sent to one node: its partition and device, the candidates and their arrays."""

    partition: int
    device: str
    candidates: dict[str, Architecture]
    arrays: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = field(default_factory=dict)


def collect_replies(
    replies: Iterable[Message], sent: Mapping[int, SentMessage], kind: str, privacy: str,
    server_round: int | None = None,
) -> tuple[list[ClientResult], list[Rejection], int]:
    """Validate a round's replies; return accepted results, rejections and the reply payload in bytes.

    ``sent`` maps node id to what that node was sent. A reply carrying a Flower error,
    a second reply from the same node, and a node that sent no reply before the
    timeout each count as one rejection. Results are ordered by partition, node id and
    candidate id, so aggregation does not depend on the order in which replies arrived.
    """
    where = f" in round {server_round}" if server_round is not None else ""
    results, rejections, received, replied = [], [], 0, set()
    for reply in replies:
        node = reply.metadata.src_node_id
        target = sent.get(node)
        if target is None:
            logger.warning("ignored a reply from node %d%s, which received no message this round", node, where)
            continue
        if node in replied:
            reason = "a second reply to the same message; only the first one counts"
            logger.warning("rejected reply from node %d (partition %d)%s: %s", node, target.partition, where, reason)
            rejections.append(Rejection(node, target.partition, None, reason, "duplicate-reply"))
            continue
        replied.add(node)
        if reply.has_error():
            reason = f"client error: {reply.error.reason}"
            logger.warning("rejected reply from node %d (partition %d)%s: %s", node, target.partition, where, reason)
            rejections.append(Rejection(node, target.partition, None, reason, "client-error"))
            continue
        received += payload_bytes(reply.content)
        accepted, rejected = validate_reply(
            reply.content, kind=kind, node_id=node, partition=target.partition, device=target.device,
            sent=target.candidates, privacy=privacy, sent_arrays=target.arrays, server_round=server_round)
        results.extend(accepted)
        rejections.extend(rejected)
    for node in sorted(set(sent) - replied):
        logger.warning("node %d (partition %d) sent no reply%s before the timeout", node, sent[node].partition,
                       where)
        rejections.append(Rejection(node, sent[node].partition, None, "no reply before the timeout", "no-reply"))
    results.sort(key=lambda r: (r.partition, r.node_id, r.report.id))
    return results, rejections, received


def count_rejections(rejections: Iterable[Rejection]) -> dict[str, int]:
    """Return the number of rejections per kind (only kinds that occurred), in :data:`REJECTION_KINDS` order."""
    counts = {kind: 0 for kind in REJECTION_KINDS}
    for rejection in rejections:
        counts[rejection.kind] = counts.get(rejection.kind, 0) + 1
    return {kind: n for kind, n in counts.items() if n}
