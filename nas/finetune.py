"""Data loaders, the shared SGD recipe, subnet fine-tuning and BatchNorm recalibration.

Everything here is deterministic on the CPU for a given ``seed``. Loaders shuffle
with their own seeded generator. The global torch RNG (used by dropout) is seeded
inside a forked RNG scope, so a call leaves the caller's RNG state unchanged.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nas.errors import DatasetError

if TYPE_CHECKING:
    from nas.data import ArraySplit

logger = logging.getLogger(__name__)


def make_loader(
    split: "ArraySplit",
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    drop_last: bool = False,
) -> DataLoader:
    """Return a single-process loader over ``split`` yielding ``(x float32, y int64)`` batches.

    With ``shuffle`` the order comes from a generator seeded with ``seed``; each pass over
    the loader draws a new, reproducible order. ``drop_last`` drops a final partial batch,
    but never the only batch of a split smaller than ``batch_size``.
    """
    _check_positive("batch_size", batch_size)
    x, y = np.asarray(split.x), np.asarray(split.y)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DatasetError(
            f"split must hold x of shape (N, C, H, W) and y of shape (N,); got {x.shape} and {y.shape}"
        )
    if len(y) == 0:
        raise DatasetError("split is empty; give at least one sample")
    dataset = TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=0,
        drop_last=drop_last and len(y) >= batch_size,
    )


def make_optimizer(
    model: nn.Module, *, lr: float, total_steps: int, weight_decay: float = 3e-5, momentum: float = 0.9
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Return SGD (Nesterov) and a per-step cosine schedule that decays ``lr`` to 0 over ``total_steps``.

    Weight decay applies to weight matrices and kernels only, not to BatchNorm
    parameters or biases.
    """
    if not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr={lr!r} is invalid; use a positive learning rate")
    _check_positive("total_steps", total_steps)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=momentum,
        nesterov=True,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    return optimizer, schedule


def finetune(
    model: nn.Module,
    train: "ArraySplit",
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 0.01,
    seed: int = 0,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Fine-tune ``model`` in place with cross-entropy on ``train``; leave it in eval mode.

    Runs ``epochs`` passes, or stops after ``max_steps`` optimizer steps if that comes
    first; the cosine schedule spans the steps that actually run. Returns ``loss`` (mean
    training loss over the last epoch's steps), ``steps`` and ``samples`` (samples seen).
    """
    _check_positive("epochs", epochs)
    if max_steps is not None:
        _check_positive("max_steps", max_steps)
    loader = make_loader(train, batch_size, shuffle=True, seed=seed, drop_last=True)
    total = epochs * len(loader) if max_steps is None else min(epochs * len(loader), max_steps)
    optimizer, schedule = make_optimizer(model, lr=lr, total_steps=total)
    device = _device_of(model)
    steps, samples, epoch_losses = 0, 0, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        while steps < total:
            epoch_losses = []
            for x, y in loader:
                if steps >= total:
                    break
                x, y = x.to(device), y.to(device)
                logits = model(x)
                check_targets(logits, y)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                steps += 1
                samples += len(y)
                epoch_losses.append(loss.item())
    model.eval()
    final = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
    logger.debug("fine-tuned %d steps on %d samples; final loss %.4f", steps, samples, final)
    return {"loss": final, "steps": steps, "samples": samples}


def recalibrate_bn(
    model: nn.Module,
    split: "ArraySplit",
    *,
    num_batches: int = 4,
    batch_size: int = 64,
    seed: int = 0,
) -> None:
    """Re-estimate every BatchNorm's running mean and variance on ``num_batches`` of ``split``.

    Running statistics are reset and then averaged cumulatively (``momentum=None``) over
    the batches, with only the BatchNorm layers in training mode and no gradients. The
    model ends in eval mode with its BatchNorm momentum values restored. A shared
    supernet's statistics mix all subnets, so call this before evaluating one subnet.
    """
    _check_positive("num_batches", num_batches)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        logger.debug("model has no BatchNorm layers; nothing to recalibrate")
        model.eval()
        return
    momenta = [m.momentum for m in norms]
    # A trailing batch of one sample would fail in BatchNorm on 1x1 feature maps, so drop it.
    loader = make_loader(split, batch_size, shuffle=True, seed=seed, drop_last=True)
    device = _device_of(model)
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        with torch.no_grad():
            for index, (x, _) in enumerate(loader):
                if index >= num_batches:
                    break
                model(x.to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()


def check_targets(logits: torch.Tensor, y: torch.Tensor) -> None:
    """Raise :class:`DatasetError` if a label in ``y`` has no matching logit column."""
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= logits.shape[1]):
        raise DatasetError(
            f"labels span [{int(y.min())}, {int(y.max())}] but the model has {logits.shape[1]} outputs; "
            "build the search space with the dataset's num_classes"
        )


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid; use a positive int")
