"""Random search: rejection sampling under the latency budget, a baseline for the other strategies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nas.search.base import SearchStrategy, register_strategy, require_int
from nas.search.evaluator import Evaluator
from nas.search.feasibility import sample_feasible
from nas.space import Architecture

__all__ = ["RandomSearch", "RandomSearchParams"]


@dataclass(frozen=True)
class RandomSearchParams:
    """Parameters of :class:`RandomSearch`.

    Attributes:
        num_samples: Feasible random architectures drawn per ask. ``ask(n)`` draws
            ``max(n, num_samples)`` of them and returns the ``n`` the surrogates score
            best. With the default 0 it returns ``n`` random architectures, a pure
            random baseline that ignores the accuracy surrogate.
        max_batches: Rejection-sampling batches of 64 draws before the sampler falls
            back to shrinking rejected draws until they fit the budget.
    """

    num_samples: int = 0
    max_batches: int = 16

    def __post_init__(self) -> None:
        require_int(self.num_samples, "num_samples", 0)
        require_int(self.max_batches, "max_batches", 1)


@register_strategy
class RandomSearch(SearchStrategy):
    """Sample architectures uniformly per gene and keep those within the budget.

    Measured results do not steer it; it ignores :meth:`tell` apart from storing them.
    """

    name = "random"
    params_type = RandomSearchParams

    @classmethod
    def params_for_evaluations(cls, evaluations: int) -> dict[str, Any]:
        """Return ``num_samples`` equal to ``evaluations``."""
        require_int(evaluations, "evaluations", 1)
        return {"num_samples": evaluations}

    def _search(self, n: int, evaluator: Evaluator, exclude: frozenset[Architecture]) -> None:
        count = max(n, self.params.num_samples)
        archs = sample_feasible(
            self.space, evaluator, self.rng, count, exclude, max_batches=self.params.max_batches
        )
        evaluator.score(archs)
