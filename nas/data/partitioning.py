"""Split a dataset across federated clients: IID or Dirichlet label skew.

Each client receives a share of the train, val and test splits. Under the
Dirichlet scheme, class ``c`` is spread over the clients by proportions drawn from
``Dirichlet(alpha, ..., alpha)``, and the same proportions apply to all three
splits, so a client's validation and test data follow its training distribution.
Small ``alpha`` gives strong skew; large ``alpha`` approaches IID. The result is a
pure function of the dataset, the settings and ``seed``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from nas.errors import DatasetError
from nas.data.types import SPLITS, ArraySplit, DatasetSplits

logger = logging.getLogger(__name__)

SCHEMES = ("iid", "dirichlet")


@dataclass(frozen=True, eq=False)
class ClientData:
    """The private data of one client: its own train, val and test splits."""

    client_id: int
    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    num_classes: int
    in_channels: int
    task: str

    def splits(self) -> dict[str, ArraySplit]:
        """Return ``{"train": ..., "val": ..., "test": ...}``."""
        return {name: getattr(self, name) for name in SPLITS}


def partition(
    splits: DatasetSplits,
    num_clients: int,
    *,
    scheme: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
) -> list[ClientData]:
    """Split ``splits`` across ``num_clients`` clients; return them ordered by client id.

    ``scheme="iid"`` deals every class evenly (client sizes differ by at most one sample
    per split); ``scheme="dirichlet"`` draws per-class client proportions with
    concentration ``alpha`` (> 0). Every sample goes to exactly one client, and every
    client gets at least one sample of every split: a client left empty takes one
    sample from the largest client. Raises :class:`DatasetError` for invalid settings
    and when a split has fewer samples than there are clients.
    """
    _validate(splits, num_clients, scheme, alpha)
    rng = np.random.default_rng(seed)
    proportions = None
    if scheme == "dirichlet":
        proportions = _dirichlet_proportions(splits.num_classes, num_clients, float(alpha), rng)
    owners: dict[str, np.ndarray] = {}
    for split_name in SPLITS:
        labels = getattr(splits, split_name).y
        if proportions is None:
            assigned = _deal_even(labels, num_clients, rng)
        else:
            assigned = _deal_by_proportions(labels, proportions, rng)
        owners[split_name] = _fill_empty(assigned, labels, proportions, num_clients, split_name)
    return [
        ClientData(
            client_id=client,
            num_classes=splits.num_classes,
            in_channels=splits.in_channels,
            task=splits.task,
            **{name: getattr(splits, name).subset(np.flatnonzero(owners[name] == client)) for name in SPLITS},
        )
        for client in range(num_clients)
    ]


def _validate(splits: DatasetSplits, num_clients: int, scheme: str, alpha: float) -> None:
    if not isinstance(splits, DatasetSplits):
        raise DatasetError(f"partition needs DatasetSplits, got {type(splits).__name__}")
    if not isinstance(num_clients, (int, np.integer)) or isinstance(num_clients, bool) or num_clients < 1:
        raise DatasetError(f"num_clients={num_clients!r} is invalid; use an int >= 1")
    if scheme not in SCHEMES:
        raise DatasetError(f"partition scheme={scheme!r} is unknown; allowed values: {SCHEMES}")
    if scheme == "dirichlet" and (
        not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0
    ):
        raise DatasetError(f"alpha={alpha!r} is invalid; the Dirichlet concentration must be a float > 0")
    for split_name in SPLITS:
        size = len(getattr(splits, split_name))
        if size < num_clients:
            raise DatasetError(
                f"cannot partition dataset {splits.name!r} across {num_clients} clients: its {split_name} "
                f"split has only {size} samples, so clients {size}..{num_clients - 1} would get no "
                f"{split_name} sample; use at most {size} clients or a larger {split_name} split"
            )


def _dirichlet_proportions(num_classes: int, num_clients: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Return (num_classes, num_clients) rows that each sum to 1."""
    draws = np.nan_to_num(rng.dirichlet(np.full(num_clients, alpha), size=num_classes))
    sums = draws.sum(axis=1, keepdims=True)
    uniform = np.full_like(draws, 1.0 / num_clients)
    return np.where(sums > 0, draws / np.where(sums > 0, sums, 1.0), uniform)


def _deal_even(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> np.ndarray:
    """Deal samples round-robin, class after class, from a random starting client."""
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
    owners = np.empty(len(labels), dtype=np.int64)
    owners[order] = (np.arange(len(order)) + rng.integers(num_clients)) % num_clients
    return owners


def _deal_by_proportions(labels: np.ndarray, proportions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    owners = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        counts = _apportion(proportions[label], len(members), rng)
        owners[members] = np.repeat(np.arange(len(counts)), counts)
    return owners


def _apportion(shares: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Return int counts summing to ``total``, close to ``shares * total`` (largest remainder)."""
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    remainder = total - int(counts.sum())
    if remainder > 0:
        ranking = np.lexsort((rng.random(len(shares)), -(exact - counts)))
        counts[ranking[:remainder]] += 1
    return counts


def _fill_empty(
    owners: np.ndarray, labels: np.ndarray, proportions: np.ndarray | None, num_clients: int, split_name: str
) -> np.ndarray:
    """Give every client without a sample one sample of the currently largest client.

    The moved sample is of the class the receiving client is most likely to hold, so
    its split keeps following its class proportions.
    """
    owners = owners.copy()
    sizes = np.bincount(owners, minlength=num_clients)
    for client in np.flatnonzero(sizes == 0):
        donor = int(np.argmax(sizes))
        if sizes[donor] < 2:  # unreachable when len(labels) >= num_clients
            raise DatasetError(f"client {client} would get no {split_name} sample: too few samples to share")
        candidates = np.flatnonzero(owners == donor)
        if proportions is None:
            chosen = candidates[0]
        else:
            chosen = candidates[int(np.argmax(proportions[labels[candidates], client]))]
        owners[chosen] = client
        sizes[donor] -= 1
        sizes[client] += 1
        logger.debug("partition: client %d got one %s sample from client %d", client, split_name, donor)
    return owners


def partition_summary(clients: Sequence[ClientData]) -> list[dict[str, Any]]:
    """Return one JSON-ready dict per client: split sizes and per-class counts.

    Keys: ``client_id``, ``train``, ``val``, ``test`` (samples) and ``class_counts``
    (``{"train": [...], "val": [...], "test": [...]}``, one count per class).
    """
    summary = []
    for client in clients:
        row: dict[str, Any] = {"client_id": int(client.client_id)}
        row.update({name: len(split) for name, split in client.splits().items()})
        row["class_counts"] = {
            name: [int(c) for c in split.class_counts(client.num_classes)] for name, split in client.splits().items()
        }
        summary.append(row)
    return summary


def format_partition_summary(clients: Sequence[ClientData] | Sequence[Mapping[str, Any]]) -> str:
    """Return a plain-text table: one row per client with split sizes and train class counts."""
    rows = partition_summary(clients) if clients and isinstance(clients[0], ClientData) else list(clients)
    if not rows:
        return "(no clients)"
    header = ["client", "train", "val", "test", "train samples per class"]
    lines = [
        [str(r["client_id"]), str(r["train"]), str(r["val"]), str(r["test"]),
         " ".join(str(c) for c in r["class_counts"]["train"])]
        for r in rows
    ]
    totals = [sum(r[name] for r in rows) for name in SPLITS]
    per_class = np.sum([r["class_counts"]["train"] for r in rows], axis=0)
    lines.append(["total", *map(str, totals), " ".join(str(int(c)) for c in per_class)])
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    formatted = [
        "  ".join(cell.rjust(width) if i < 4 else cell for i, (cell, width) in enumerate(zip(line, widths)))
        for line in [header, *lines]
    ]
    return "\n".join(line.rstrip() for line in formatted)
