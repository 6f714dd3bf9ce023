"""Latency-budget feasibility: the infeasible-budget check, repair and feasible sampling.

Every strategy returns only architectures whose predicted latency is within the
budget. These helpers give them the three tools they need: :func:`check_feasible`
rejects a budget below the fastest architecture with one clear error,
:func:`repair` shrinks an architecture until it fits, and :func:`sample_feasible`
draws random architectures under the budget by rejection sampling.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Collection

import numpy as np

from nas.errors import SearchError
from nas.search.evaluator import Evaluator
from nas.search.objective import Objective
from nas.space import Architecture, SearchSpace

__all__ = [
    "check_feasible",
    "find_fastest",
    "single_gene_neighbours",
    "shrink_moves",
    "shrink",
    "repair",
    "sample_feasible",
]

logger = logging.getLogger(__name__)


def find_fastest(
    space: SearchSpace,
    evaluator: Evaluator,
    rng: np.random.Generator | None = None,
    *,
    samples: int = 64,
    max_rounds: int = 8,
) -> tuple[Architecture, float]:
    """Search for the architecture with the lowest predicted latency; return it and its latency in ms.

    Candidates are the smallest architecture and ``samples`` random ones. From the
    fastest of them, a steepest-descent local search moves to the fastest one-gene
    neighbour (see :func:`single_gene_neighbours`) for up to ``max_rounds`` rounds.
    A learned latency predictor need not be monotone in size, so the smallest
    architecture is not assumed to be the fastest.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    candidates = [space.smallest()] + [space.sample(rng) for _ in range(samples)]
    latencies = evaluator.latency(candidates)
    best = int(np.argmin(latencies))
    fastest, fastest_ms = candidates[best], float(latencies[best])
    for _ in range(max_rounds):
        neighbours = single_gene_neighbours(space, fastest)
        latencies = evaluator.latency(neighbours)
        best = int(np.argmin(latencies))
        if latencies[best] >= fastest_ms:
            break
        fastest, fastest_ms = neighbours[best], float(latencies[best])
    return fastest, fastest_ms


def single_gene_neighbours(space: SearchSpace, arch: Architecture) -> list[Architecture]:
    """Return every architecture that differs from ``arch`` in one gene.

    A deeper stage fills its new blocks with the smallest kernel and expand ratio.
    """
    neighbours = []
    depths = list(arch.depths)
    kernels = [list(k) for k in arch.kernels]
    expands = [list(e) for e in arch.expands]

    def build() -> Architecture:
        return Architecture(tuple(depths), tuple(map(tuple, kernels)), tuple(map(tuple, expands)))

    for stage, depth in enumerate(arch.depths):
        for new_depth in space.depth_choices:
            if new_depth == depth:
                continue
            fill = new_depth - depth
            depths[stage] = new_depth
            kernels[stage] = list(arch.kernels[stage][:new_depth]) + [space.kernel_choices[0]] * fill
            expands[stage] = list(arch.expands[stage][:new_depth]) + [space.expand_choices[0]] * fill
            neighbours.append(build())
        depths[stage], kernels[stage], expands[stage] = depth, list(arch.kernels[stage]), list(arch.expands[stage])
    for genes, choices in ((kernels, space.kernel_choices), (expands, space.expand_choices)):
        for stage, index, _, _ in arch.blocks():
            original = genes[stage][index]
            for value in choices:
                if value != original:
                    genes[stage][index] = value
                    neighbours.append(build())
            genes[stage][index] = original
    return neighbours


def check_feasible(
    space: SearchSpace,
    objective: Objective,
    rng: np.random.Generator | None = None,
    *,
    evaluator: Evaluator | None = None,
) -> tuple[Architecture, float]:
    """Return the fastest architecture found and its predicted latency in ms.

    Raises :class:`SearchError` naming the budget, the device and the fastest
    achievable latency when ``objective.budget_ms`` is below it. ``rng`` defaults
    to a fixed seed, so the check does not depend on the caller's random state.

    NOTE: the fastest architecture is found by sampling and local search, not by
    enumerating the space, so a budget just below the true minimum can pass here
    and a budget a hair above it can be rejected.
    """
    evaluator = Evaluator(objective) if evaluator is None else evaluator
    fastest, fastest_ms = find_fastest(space, evaluator, rng)
    if objective.budget_ms < fastest_ms:
        raise SearchError(
            f"latency budget {objective.budget_ms:g} ms on device {objective.device!r} is below the fastest "
            f"achievable {fastest_ms:.4g} ms (architecture {fastest}) predicted by the latency surrogate; "
            f"raise the budget to at least {fastest_ms:.4g} ms or drop it from the device's budgets"
        )
    return fastest, fastest_ms


def shrink_moves(space: SearchSpace, arch: Architecture) -> list[Architecture]:
    """Return every architecture with one gene of ``arch`` moved one choice down.

    A gene is a stage depth (the last block is dropped), a block kernel or a block
    expand ratio. The list is empty only for the smallest architecture.
    """
    moves = []
    depths = list(arch.depths)
    for stage, depth in enumerate(arch.depths):
        if depth > space.depth_choices[0]:
            depths[stage] = space.depth_choices[space.depth_choices.index(depth) - 1]
            kernels = tuple(k[: depths[s]] for s, k in enumerate(arch.kernels))
            expands = tuple(e[: depths[s]] for s, e in enumerate(arch.expands))
            moves.append(Architecture(tuple(depths), kernels, expands))
            depths[stage] = depth
    for field, choices in (("kernels", space.kernel_choices), ("expands", space.expand_choices)):
        values = getattr(arch, field)
        for stage, index, _, _ in arch.blocks():
            value = values[stage][index]
            if value > choices[0]:
                lowered = values[stage][:index] + (choices[choices.index(value) - 1],) + values[stage][index + 1 :]
                changed = values[:stage] + (lowered,) + values[stage + 1 :]
                moves.append(dataclasses.replace(arch, **{field: changed}))
    return moves


def shrink(space: SearchSpace, arch: Architecture, rng: np.random.Generator) -> Architecture | None:
    """Return a random one of :func:`shrink_moves`, or None for the smallest architecture."""
    moves = shrink_moves(space, arch)
    return moves[int(rng.integers(len(moves)))] if moves else None


def repair(
    space: SearchSpace, arch: Architecture, evaluator: Evaluator, rng: np.random.Generator
) -> Architecture | None:
    """Shrink ``arch`` one random gene at a time until it meets the budget; None if it never does.

    Each step costs one latency prediction.
    """
    current: Architecture | None = arch
    while current is not None and not evaluator.feasible([current])[0]:
        current = shrink(space, current, rng)
    return current


def sample_feasible(
    space: SearchSpace,
    evaluator: Evaluator,
    rng: np.random.Generator,
    n: int,
    exclude: Collection[Architecture] = (),
    *,
    batch_size: int = 64,
    max_batches: int = 16,
    patience: int = 4,
) -> list[Architecture]:
    """Draw up to ``n`` distinct random architectures within the budget, none in ``exclude``.

    Rejection sampling with :meth:`SearchSpace.sample`, in batches of ``batch_size``.
    Sampling stops after ``max_batches`` batches, or after ``patience`` batches in a
    row without a new architecture. Then up to ``2 * missing + 2`` rejected samples
    of the last batch are repaired by shrinking, which biases those few toward small
    architectures.
    """
    found: dict[Architecture, None] = {}
    rejected: list[Architecture] = []
    idle = batches = 0
    for batches in range(1, max_batches + 1):
        batch = [space.sample(rng) for _ in range(batch_size)]
        mask = evaluator.feasible(batch)
        before = len(found)
        for arch, ok in zip(batch, mask):
            if ok and arch not in exclude:
                found.setdefault(arch)
        rejected = [a for a, ok in zip(batch, mask) if not ok]
        if len(found) >= n:
            return list(found)[:n]
        idle = idle + 1 if len(found) == before else 0
        if idle >= patience:
            break
    # Repairs of different draws often end in the same small architecture, so the attempts are capped.
    for arch in rejected[: 2 * (n - len(found)) + 2]:
        fixed = repair(space, arch, evaluator, rng)
        if fixed is not None and fixed not in exclude:
            found.setdefault(fixed)
        if len(found) >= n:
            break
    if len(found) < n:
        logger.info(
            "sampled %d of %d requested architectures under %s after %d batches",
            len(found), n, evaluator.objective.key, batches,
        )
    return list(found)[:n]
