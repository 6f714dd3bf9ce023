"""Privacy audit on the client: a loss-threshold membership-inference attack on a model.

The attacker guesses that a sample was in the training set when the model's loss on it
is low. Its success over all thresholds is the ROC AUC of the score ``-loss`` with
members (the client's private training split) as positives and non-members (the
client's private test split) as negatives. An AUC of 0.5 means the losses do not reveal
membership. Values above 0.5 measure how much a released model leaks about who trained
it. Only the AUC leaves the client, never a loss or a sample.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score
from torch import nn

from nas.data import ArraySplit
from nas.errors import DatasetError
from nas.evaluate import per_sample_losses

#: Upper bound on the samples scored per split, so an audit stays cheap on large clients.
MAX_AUDIT_SAMPLES = 2000


def membership_auc(member_losses: np.ndarray, non_member_losses: np.ndarray) -> float:
    """Return the ROC AUC of the loss-threshold attack (members have label 1, score ``-loss``)."""
    members = np.asarray(member_losses, dtype=np.float64).reshape(-1)
    others = np.asarray(non_member_losses, dtype=np.float64).reshape(-1)
    if members.size == 0 or others.size == 0:
        raise DatasetError(f"a membership audit needs members and non-members, got {members.size} and {others.size}")
    if not (np.all(np.isfinite(members)) and np.all(np.isfinite(others))):
        raise DatasetError("a membership audit needs finite losses")
    labels = np.concatenate([np.ones(members.size), np.zeros(others.size)])
    return float(roc_auc_score(labels, -np.concatenate([members, others])))


def _subsample(split: ArraySplit, limit: int, seed: int) -> ArraySplit:
    if len(split.y) <= limit:
        return split
    keep = np.sort(np.random.default_rng(seed).choice(len(split.y), size=limit, replace=False))
    return ArraySplit(split.x[keep], split.y[keep])


def audit_model(model: nn.Module, members: ArraySplit, non_members: ArraySplit, *, seed: int = 0,
                max_samples: int = MAX_AUDIT_SAMPLES) -> float:
    """Return the membership-inference AUC of ``model`` on ``members`` versus ``non_members``.

    Each split is scored on at most ``max_samples`` samples, drawn with ``seed``.
    """
    member_losses = per_sample_losses(model, _subsample(members, max_samples, seed))
    other_losses = per_sample_losses(model, _subsample(non_members, max_samples, seed + 1))
    return membership_auc(member_losses, other_losses)
