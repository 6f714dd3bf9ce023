"""The loss-threshold membership-inference audit, on real models and the digits data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_client.privacy_audit import audit_model, membership_auc
from nas.data import load_dataset
from nas.errors import DatasetError
from nas.finetune import finetune
from nas.space import SearchSpace
from nas.subnet import Subnet


def test_auc_orders_losses() -> None:
    assert membership_auc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert membership_auc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    assert membership_auc(np.array([0.2, 0.2]), np.array([0.2, 0.2])) == 0.5
    assert membership_auc(np.array([0.1, 0.4]), np.array([0.2, 0.3])) == 0.5
    with pytest.raises(DatasetError, match="members and non-members"):
        membership_auc(np.array([]), np.array([0.1]))
    with pytest.raises(DatasetError, match="finite"):
        membership_auc(np.array([np.nan]), np.array([0.1]))


def test_overfit_model_leaks_untrained_does_not() -> None:
    torch.set_num_threads(1)
    splits = load_dataset("digits", seed=0).resized(16)
    members = splits.train.subset(np.arange(48))
    non_members = splits.test
    space = SearchSpace.for_task(1, 10, 16)
    untrained = Subnet(space, space.smallest(), seed=0)
    untouched = audit_model(untrained, members, non_members)
    model = Subnet(space, space.smallest(), seed=0)
    finetune(model, members, epochs=60, batch_size=16, lr=0.05, seed=0)
    leaked = audit_model(model, members, non_members)
    assert abs(untouched - 0.5) < 0.12, f"an untrained model scored AUC {untouched:.3f}"
    assert leaked > 0.75, f"a model fitted to 48 samples scored AUC {leaked:.3f}"
    assert audit_model(model, members, non_members, max_samples=20) == audit_model(
        model, members, non_members, max_samples=20)
