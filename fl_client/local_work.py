"""The work a client does for one candidate, all on its own data and hardware.

For each candidate: build the subnet from its architecture, load the weights the
server sent (exact keys, shapes and dtypes), fine-tune on the private train split,
recalibrate BatchNorm, evaluate on the private validation split (test split in the
final evaluation), export to ONNX, time it with this node's hardware profile, and
ask the surrogates the server sent what they predict for it. In the final
evaluation it also audits the model (:mod:`fl_client.privacy_audit`), once as received
and once after fine-tuning. Only the aggregate numbers of
:class:`~fl_server.messages.CandidateReport` leave the client.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

import numpy as np
import torch

from hw_profiles import HardwareProfile, measure_latency
from nas.data import ArraySplit, ClientData
from nas.errors import ReportError
from nas.evaluate import evaluate
from nas.export import export_onnx
from nas.finetune import finetune, recalibrate_bn
from nas.space import SearchSpace
from nas.subnet import Subnet
from surrogate import AccuracyPredictor, LatencyPredictor
from fl_server.messages import ACCURACY_SURROGATE, LATENCY_PREFIX, Candidate, CandidateReport, TrainingSettings
from fl_client.privacy_audit import audit_model

logger = logging.getLogger(__name__)


class Surrogates:
    """The accuracy surrogate and this device's latency surrogate, parsed from the message texts."""

    def __init__(self, texts: Mapping[str, str], space: SearchSpace, device: str) -> None:
        key = LATENCY_PREFIX + device
        missing = [k for k in (ACCURACY_SURROGATE, key) if k not in texts]
        if missing:
            raise ReportError(f"the server message lacks surrogates {missing}; it contains {sorted(texts)}")
        self.accuracy = AccuracyPredictor.from_text(texts[ACCURACY_SURROGATE], space)
        self.latency = LatencyPredictor.from_text(texts[key], space)

    def predict(self, candidate: Candidate) -> tuple[float, float]:
        """Return the predicted accuracy (fraction) and latency (ms) of ``candidate``."""
        return (
            float(self.accuracy.predict([candidate.arch]).mean[0]),
            float(self.latency.predict([candidate.arch]).mean[0]),
        )


def build_subnet(
    space: SearchSpace, candidate: Candidate, weights: Mapping[str, np.ndarray] | None, seed: int
) -> Subnet:
    """Return ``Subnet(space, arch)`` holding ``weights``; raise :class:`ReportError` if they do not fit."""
    model = Subnet(space, candidate.arch, seed=seed)
    if weights is None:
        return model
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ReportError(
            f"weights for candidate {candidate.id!r} do not fit its architecture: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    state = {}
    for key, reference in expected.items():
        value = torch.from_numpy(np.array(weights[key], copy=True))
        if value.shape != reference.shape or value.dtype != reference.dtype:
            raise ReportError(
                f"weight {key!r} of candidate {candidate.id!r} is {value.dtype}{tuple(value.shape)}; "
                f"the subnet needs {reference.dtype}{tuple(reference.shape)}"
            )
        state[key] = value
    model.load_state_dict(state, strict=True)
    return model


def candidate_seed(seed: int, index: int) -> int:
    """Return the seed of the ``index``-th candidate of a message whose seed is ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def work_on_candidate(
    candidate: Candidate,
    *,
    index: int,
    space: SearchSpace,
    weights: Mapping[str, np.ndarray] | None,
    data: ClientData,
    eval_split: ArraySplit,
    profile: HardwareProfile,
    settings: TrainingSettings,
    seed: int,
    surrogates: Surrogates,
    audit: bool = False,
) -> tuple[CandidateReport, dict[str, np.ndarray]]:
    """Fine-tune, evaluate and time one candidate; return its report and its trained state dict.

    With ``audit`` the report carries the membership-inference AUC of the model as
    received (``mia_auc``) and after fine-tuning (``mia_auc_finetuned``), with the
    train split as members and ``eval_split`` as non-members.
    """
    local_seed = candidate_seed(seed, index)
    started = time.perf_counter()
    model = build_subnet(space, candidate, weights, local_seed)
    audits: dict[str, float] = {}
    if audit:
        audits["mia_auc"] = audit_model(model, data.train, eval_split, seed=local_seed)
    fit = finetune(
        model, data.train, epochs=settings.finetune_epochs, batch_size=settings.batch_size, lr=settings.lr,
        seed=local_seed, max_steps=settings.max_steps or None,
    )
    recalibrate_bn(model, data.train, num_batches=settings.bn_batches, batch_size=settings.batch_size, seed=local_seed)
    result = evaluate(model, eval_split, task=data.task)
    if audit:
        audits["mia_auc_finetuned"] = audit_model(model, data.train, eval_split, seed=local_seed)
    train_s = time.perf_counter() - started

    started = time.perf_counter()
    onnx_bytes = export_onnx(model, input_shape=(space.in_channels, space.resolution, space.resolution))
    latency = measure_latency(onnx_bytes, profile)
    measure_s = time.perf_counter() - started
    pred_accuracy, pred_latency = surrogates.predict(candidate)
    logger.info(
        "candidate %s %s: accuracy %.3f after %d steps, latency %.3f ms on %s",
        candidate.id, candidate.arch, result.accuracy, fit["steps"], latency.median_ms, profile.name,
    )
    report = CandidateReport(
        id=candidate.id, accuracy=result.accuracy, loss=result.loss, latency_ms=latency.median_ms,
        latency_p10_ms=latency.p10_ms, latency_p90_ms=latency.p90_ms, latency_cv=latency.cv,
        latency_stable=1.0 if latency.stable else 0.0, pred_accuracy=pred_accuracy, pred_latency_ms=pred_latency,
        num_train=len(data.train), num_eval=result.num_samples, train_s=train_s, measure_s=measure_s, **audits,
    )
    state = {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}
    return report, state
