"""Evaluation of a model or of many subnets of a supernet on an array split.

Every task ("multi-class", "binary", "ordinal-regression") is scored as
classification: accuracy of the arg-max class and mean cross-entropy. Binary tasks
also get the ROC AUC of the softmax probability of class 1.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from nas.errors import DatasetError
from nas.finetune import check_targets, make_loader, recalibrate_bn
from nas.progress import progress as progress_bar

if TYPE_CHECKING:
    from nas.data import ArraySplit
    from nas.space import Architecture

logger = logging.getLogger(__name__)

TASKS = ("multi-class", "binary", "ordinal-regression")


@dataclass(frozen=True)
class EvalResult:
    """Scores of one model on one split.

    ``accuracy`` is a fraction in [0, 1]; ``loss`` is the mean cross-entropy in nats per
    sample; ``auc`` is the ROC AUC for binary tasks (None otherwise, or when the split
    contains a single class); ``num_samples`` counts the samples scored.
    """

    accuracy: float
    loss: float
    auc: float | None
    num_samples: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate(
    model: nn.Module,
    split: "ArraySplit",
    *,
    batch_size: int = 256,
    task: str = "multi-class",
) -> EvalResult:
    """Score ``model`` in eval mode on every sample of ``split``; restore its previous mode."""
    if task not in TASKS:
        raise DatasetError(f"task={task!r} is unknown; allowed values: {TASKS}")
    logits, targets = _predict(model, split, batch_size)
    loss = F.cross_entropy(logits, targets).item()
    accuracy = (logits.argmax(dim=1) == targets).double().mean().item()
    auc = _binary_auc(logits, targets) if task == "binary" else None
    return EvalResult(accuracy=accuracy, loss=loss, auc=auc, num_samples=len(targets))


def per_sample_losses(model: nn.Module, split: "ArraySplit", *, batch_size: int = 256) -> np.ndarray:
    """Return the cross-entropy of every sample of ``split`` (float64, shape (N,), in nats)."""
    logits, targets = _predict(model, split, batch_size)
    return F.cross_entropy(logits, targets, reduction="none").double().numpy()


def evaluate_subnets(
    supernet: nn.Module,
    archs: Iterable["Architecture"],
    train_split: "ArraySplit",
    val_split: "ArraySplit",
    *,
    bn_batches: int = 4,
    bn_batch_size: int = 64,
    batch_size: int = 256,
    task: str = "multi-class",
    seed: int = 0,
    progress: bool = True,
) -> list[EvalResult]:
    """Extract each architecture from ``supernet``, recalibrate its BatchNorm, and score it.

    Recalibration uses ``bn_batches`` batches of ``train_split`` drawn with ``seed`` (the
    same batches for every subnet); ``bn_batches=0`` keeps the supernet's shared
    statistics. The supernet itself is not modified. Results follow the order of ``archs``.
    """
    if bn_batches < 0:
        raise ValueError(f"bn_batches={bn_batches!r} is invalid; use 0 (no recalibration) or more")
    archs = list(archs)
    results = []
    for arch in progress_bar(archs, desc="evaluate subnets", enabled=progress, unit="subnet"):
        subnet = supernet.extract_subnet(arch)
        if bn_batches:
            recalibrate_bn(subnet, train_split, num_batches=bn_batches, batch_size=bn_batch_size, seed=seed)
        results.append(evaluate(subnet, val_split, batch_size=batch_size, task=task))
    logger.debug("evaluated %d subnets on %d samples each", len(results), len(val_split.y))
    return results


def _predict(model: nn.Module, split: "ArraySplit", batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader = make_loader(split, batch_size, shuffle=False, seed=0)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    try:
        with torch.no_grad():
            for x, y in loader:
                logits = model(x.to(device)).float().cpu()
                check_targets(logits, y)
                outputs.append(logits)
                targets.append(y)
    finally:
        model.train(was_training)
    return torch.cat(outputs), torch.cat(targets)


def _binary_auc(logits: torch.Tensor, targets: torch.Tensor) -> float | None:
    if logits.shape[1] != 2:
        raise DatasetError(f"task='binary' needs a model with 2 outputs, got {logits.shape[1]}")
    labels = targets.numpy()
    if len(np.unique(labels)) < 2:
        logger.warning("AUC is undefined on a split with a single class; reporting None")
        return None
    scores = torch.softmax(logits, dim=1)[:, 1].double().numpy()
    return float(roc_auc_score(labels, scores))
