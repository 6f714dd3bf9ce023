"""Weight-sharing supernet training with the sandwich rule and in-place distillation.

Each step runs the same batch through the largest subnet (hard-label cross-entropy),
the smallest subnet and ``num_random`` uniformly sampled subnets. The smaller ones
learn from the largest's detached soft output (KL divergence) when ``distill`` is
on, else from the labels. Gradients of all of them accumulate into one optimizer
step, so every shared weight is updated once per batch.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas.evaluate import evaluate_subnets
from nas.finetune import check_targets, make_loader, make_optimizer
from nas.progress import progress as progress_bar
from nas.progress import set_postfix

if TYPE_CHECKING:
    from nas.data import ArraySplit

logger = logging.getLogger(__name__)


def train_supernet(
    supernet: nn.Module,
    train: "ArraySplit",
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 0.05,
    weight_decay: float = 3e-5,
    num_random: int = 2,
    distill: bool = True,
    max_grad_norm: float | None = 5.0,
    warmup_epochs: int = 0,
    seed: int = 0,
    progress: bool = True,
    val: "ArraySplit | None" = None,
) -> list[dict[str, Any]]:
    """Train ``supernet`` in place for ``epochs`` passes over ``train``; return per-epoch history.

    ``supernet`` needs ``space``, ``set_active(arch)`` and ``forward``. Optimizer: SGD,
    momentum 0.9, Nesterov, cosine decay of ``lr`` per step over all epochs,
    ``weight_decay`` on kernels only, gradient norm clipped to ``max_grad_norm`` (None:
    no clipping). The first ``warmup_epochs`` epochs train the largest subnet alone.
    Then, if the supernet has ``sort_channels()``, its mid channels are sorted by
    importance and momentum is reset, as Once-for-All does before elastic training.

    Each history entry holds ``epoch`` (from 1), ``lr`` (at the epoch's end),
    ``loss_largest`` and ``loss_smallest`` (epoch means; the smallest's loss is the
    KL divergence when distilling, None in warm-up epochs), ``seconds``, and, when
    ``val`` is given, ``val_accuracy_largest`` and ``val_accuracy_smallest`` (after
    BatchNorm recalibration on ``train``). With the same ``seed`` and thread count,
    two runs on the CPU produce identical weights; the caller's RNG state is left
    untouched. The supernet ends in eval mode with the largest subnet active.
    """
    # NOTE: channels are not sorted after sandwich training: the smaller subnets have
    # co-adapted with the leading channels, and reordering them then costs the smallest
    # subnet most of its accuracy.
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} is invalid; use a positive int")
    if not isinstance(warmup_epochs, int) or not 0 <= warmup_epochs < epochs:
        raise ValueError(f"warmup_epochs={warmup_epochs!r} is invalid; use an int in [0, epochs)")
    if not isinstance(num_random, int) or num_random < 0:
        raise ValueError(f"num_random={num_random!r} is invalid; use an int >= 0")
    space = supernet.space
    largest, smallest = space.largest(), space.smallest()
    loader = make_loader(train, batch_size, shuffle=True, seed=seed, drop_last=True)
    optimizer, schedule = make_optimizer(
        supernet, lr=lr, total_steps=epochs * len(loader), weight_decay=weight_decay
    )
    device = next(supernet.parameters()).device
    arch_rng = np.random.default_rng(seed)
    history: list[dict[str, Any]] = []
    logger.info(
        "training supernet: %d epochs x %d steps, batch %d, %d random subnets per step, distill=%s",
        epochs, len(loader), batch_size, num_random, distill,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bar = progress_bar(range(1, epochs + 1), desc="supernet epochs", enabled=progress, unit="epoch")
        for epoch in bar:
            start = time.perf_counter()
            if warmup_epochs and epoch == warmup_epochs + 1:
                _sort_channels(supernet, optimizer)
            supernet.train()
            sums = np.zeros(2)
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                if epoch <= warmup_epochs:
                    archs = []
                else:
                    archs = [smallest] + [space.sample(arch_rng) for _ in range(num_random)]
                sums += _sandwich_step(supernet, x, y, largest, archs, distill)
                if max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(supernet.parameters(), max_grad_norm)
                optimizer.step()
                schedule.step()
            record: dict[str, Any] = {
                "epoch": epoch,
                "lr": schedule.get_last_lr()[0],
                "loss_largest": float(sums[0] / len(loader)),
                "loss_smallest": float(sums[1] / len(loader)) if epoch > warmup_epochs else None,
            }
            if val is not None:
                scores = evaluate_subnets(supernet, [largest, smallest], train, val, seed=seed, progress=False)
                record["val_accuracy_largest"] = scores[0].accuracy
                record["val_accuracy_smallest"] = scores[1].accuracy
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            set_postfix(bar, **{k: v for k, v in record.items() if k.startswith(("loss", "val")) and v is not None})
            logger.info("epoch %d/%d: %s", epoch, epochs, _format(record))
    supernet.eval()
    return history


def _sandwich_step(
    supernet: nn.Module, x: torch.Tensor, y: torch.Tensor, largest: Any, others: list[Any], distill: bool
) -> tuple[float, float]:
    """Zero the gradients, then accumulate them for the largest and each of ``others``.

    Returns the loss of the largest and of the first of ``others`` (the smallest).
    """
    for parameter in supernet.parameters():
        parameter.grad = None
    supernet.set_active(largest)
    logits = supernet(x)
    check_targets(logits, y)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    teacher = F.softmax(logits.detach(), dim=1)
    losses = [loss.item()]
    for arch in others:
        supernet.set_active(arch)
        student = supernet(x)
        if distill:
            sub_loss = F.kl_div(F.log_softmax(student, dim=1), teacher, reduction="batchmean")
        else:
            sub_loss = F.cross_entropy(student, y)
        sub_loss.backward()
        losses.append(sub_loss.item())
    supernet.set_active(largest)
    return losses[0], (losses[1] if others else 0.0)


def _sort_channels(supernet: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Put the most important mid channels first, then drop momentum that no longer lines up."""
    if hasattr(supernet, "sort_channels"):
        supernet.sort_channels()
        optimizer.state.clear()
        logger.info("sorted mid channels by importance after the warm-up of the largest subnet")


def _format(record: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in record.items() if key != "epoch")
