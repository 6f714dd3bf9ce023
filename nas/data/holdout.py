"""Disjoint public and private parts of one dataset.

When stage 1 (server pretraining) and stage 2 (federated search) use the same named
dataset, the server must never train on the clients' samples. Both stages call
:func:`split_public_private` with the same seed: each split is divided class by
class, so the public and private parts share the label distribution and never share
a sample.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nas.data.types import SPLITS, DatasetSplits
from nas.errors import DatasetError

ROLES = ("public", "private")


def split_public_private(
    splits: DatasetSplits, role: str, *, private_fraction: float = 0.5, seed: int = 0
) -> DatasetSplits:
    """Return the ``role`` part ("public" or "private") of every split of ``splits``.

    ``private_fraction`` of each class of each split goes to the private part, the
    rest to the public part; 0 returns ``splits`` unchanged for "public". The result is
    deterministic for ``seed`` and the two parts are disjoint.
    """
    if role not in ROLES:
        raise DatasetError(f"role={role!r} is invalid; allowed values: {ROLES}")
    if not 0.0 <= private_fraction < 1.0:
        raise DatasetError(f"private_fraction={private_fraction} is invalid; use a value in [0, 1)")
    if private_fraction == 0.0:
        if role == "private":
            raise DatasetError("private_fraction=0 leaves no private data; use a fraction in (0, 1)")
        return splits
    rng = np.random.default_rng(seed)
    parts = {}
    for name in SPLITS:
        split = getattr(splits, name)
        chosen = []
        for label in np.unique(split.y):
            members = rng.permutation(np.flatnonzero(split.y == label))
            cut = int(round(len(members) * private_fraction))
            chosen.append(members[:cut] if role == "private" else members[cut:])
        indices = np.sort(np.concatenate(chosen))
        if len(indices) == 0:
            raise DatasetError(
                f"dataset {splits.name!r} {name} split ({len(split)} samples) leaves the {role} part empty "
                f"with private_fraction={private_fraction}; use a fraction nearer 0.5"
            )
        parts[name] = split.subset(indices)
    return dataclasses.replace(splits, **parts, name=f"{splits.name}[{role}]")
