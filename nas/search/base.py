"""The search-strategy interface and the registry that names strategies.

A strategy proposes architectures with :meth:`SearchStrategy.ask` (scored by the
current surrogates, within one device's latency budget), learns from measured
results with :meth:`SearchStrategy.tell`, and saves everything it remembers with
:meth:`SearchStrategy.state_dict`. A restored strategy continues exactly as the
uninterrupted one would: same proposals for the same calls.

Strategies are registered by name so a scenario file can select one::

    @register_strategy
    class MyStrategy(SearchStrategy):
        name = "mine"
        def _search(self, n, evaluator, exclude): ...

    strategy = create_strategy("mine", space, seed=1)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Collection, Mapping, Sequence, TypeVar

import numpy as np

from nas.errors import CheckpointError, SearchError
from nas.search.evaluator import Evaluator
from nas.search.feasibility import check_feasible, sample_feasible
from nas.search.objective import Objective, Observation
from nas.space import Architecture, SearchSpace

__all__ = [
    "Objective",
    "Observation",
    "NoParams",
    "SearchStrategy",
    "check_feasible",
    "register_strategy",
    "get_strategy",
    "create_strategy",
    "available_strategies",
]

logger = logging.getLogger(__name__)

STATE_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class NoParams:
    """Parameters of a strategy that has none."""


def require_int(value: Any, name: str, minimum: int) -> None:
    """Raise :class:`SearchError` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SearchError(f"{name}={value!r} is invalid; use an integer >= {minimum}")


def require_float(value: Any, name: str, low: float, high: float = math.inf, *, open_low: bool = False) -> None:
    """Raise :class:`SearchError` unless ``value`` is a number in [low, high] ((low, high] if ``open_low``)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and value <= high
    if not ok:
        bracket = "(" if open_low else "["
        raise SearchError(f"{name}={value!r} is invalid; use a finite number in {bracket}{low:g}, {high:g}]")


class SearchStrategy(ABC):
    """Base class of every search strategy.

    Subclasses set :attr:`name`, optionally :attr:`params_type` (a frozen dataclass
    whose fields are the strategy's parameters, validated in ``__post_init__``), and
    implement :meth:`_search`. Internal memory beyond the random generator and the
    observations goes through :meth:`_memory_state` and :meth:`_load_memory`.
    """

    name: ClassVar[str] = ""
    params_type: ClassVar[type] = NoParams

    def __init__(self, space: SearchSpace, *, seed: int = 0, **params: Any) -> None:
        if not isinstance(space, SearchSpace):
            raise SearchError(f"space must be a SearchSpace, got {type(space).__name__}")
        require_int(seed, "seed", 0)
        self.space = space
        self.seed = int(seed)
        self.params = self._build_params(params)
        self.rng = np.random.default_rng(self.seed)
        self.observations: list[Observation] = []
        self.num_asks = 0

    @classmethod
    def params_for_evaluations(cls, evaluations: int) -> dict[str, Any]:
        """Return parameters under which one :meth:`ask` scores at most ``evaluations`` architectures.

        An accuracy evaluation is one distinct architecture passed to the objective's
        ``predict_accuracy``; :meth:`ask` may top up with a few more only when the
        search ends with fewer than ``n`` feasible candidates. Strategies that cannot
        bound their evaluations return ``{}`` (their defaults).
        """
        return {}

    @classmethod
    def _build_params(cls, params: Mapping[str, Any]) -> Any:
        allowed = [f.name for f in dataclasses.fields(cls.params_type)]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise SearchError(
                f"unknown parameters {unknown} for strategy {cls.name!r}; allowed parameters: {allowed}"
            )
        return cls.params_type(**params)

    # ------------------------------------------------------------------ ask/tell
    def ask(self, n: int, objective: Objective, *, exclude: Collection[Architecture] = ()) -> list[Architecture]:
        """Return ``n`` distinct architectures, best first, for ``objective``'s device and budget.

        Every architecture is valid in the space, has predicted latency <= the budget
        and is not in ``exclude``. Fewer than ``n`` come back only if the search
        cannot find more (logged as a warning). Raises :class:`SearchError` if the
        budget is below the fastest architecture's predicted latency.
        """
        require_int(n, "n", 1)
        if not isinstance(objective, Objective):
            raise SearchError(f"objective must be an Objective, got {type(objective).__name__}")
        excluded = frozenset(exclude)
        evaluator = Evaluator(objective)
        fastest, _ = check_feasible(self.space, objective, evaluator=evaluator)
        self._search(n, evaluator, excluded)
        chosen = evaluator.best(n, excluded)
        if len(chosen) < n:
            extra = sample_feasible(self.space, evaluator, self.rng, n - len(chosen), excluded | set(chosen))
            if fastest not in excluded:
                extra.append(fastest)
            evaluator.score(extra)
            chosen = evaluator.best(n, excluded)
        for arch in chosen:
            self.space.validate(arch)  # guards against a user strategy scoring foreign architectures
        if len(chosen) < n:
            logger.warning(
                "strategy %r found only %d of %d requested architectures for %s outside the %d excluded",
                self.name, len(chosen), n, objective.key, len(excluded),
            )
        self.num_asks += 1
        logger.debug(
            "strategy %r ask %d for %s: %d proposals after %d accuracy evaluations",
            self.name, self.num_asks, objective.key, len(chosen), evaluator.accuracy_evaluations,
        )
        return chosen

    @abstractmethod
    def _search(self, n: int, evaluator: Evaluator, exclude: frozenset[Architecture]) -> None:
        """Score candidates with ``evaluator.score`` (feasible ones only).

        :meth:`ask` then returns the ``n`` best scored, feasible, non-excluded
        architectures. Draw all randomness from ``self.rng`` so state round trips
        reproduce the run.
        """

    def tell(self, observations: Sequence[Observation]) -> None:
        """Record measured results; strategies use them to steer later asks."""
        batch = list(observations)
        for observation in batch:
            if not isinstance(observation, Observation):
                raise SearchError(f"tell() expects Observation objects, got {type(observation).__name__}")
            self.space.validate(observation.arch)
        self.observations.extend(batch)
        self._on_tell(batch)

    def _on_tell(self, batch: list[Observation]) -> None:
        """React to a batch of new observations (already stored in :attr:`observations`)."""

    # --------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Return the complete state as JSON-serializable data (random generator included)."""
        return {
            "format": STATE_FORMAT,
            "strategy": self.name,
            "space": self.space.fingerprint(),
            "seed": self.seed,
            "params": dataclasses.asdict(self.params),
            "rng": self.rng.bit_generator.state,
            "num_asks": self.num_asks,
            "observations": [o.to_dict() for o in self.observations],
            "memory": self._memory_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the parameters stored there replace the current ones."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"search state is not a format-{STATE_FORMAT} strategy state dict")
        if state.get("strategy") != self.name:
            raise CheckpointError(
                f"search state belongs to strategy {state.get('strategy')!r}, not {self.name!r}; "
                f"load it into a strategy created with that name"
            )
        if state.get("space") != self.space.fingerprint():
            raise CheckpointError(
                f"search state belongs to space {state.get('space')!r}, not {self.space.fingerprint()!r}; "
                f"build the strategy on the space of the run that saved it"
            )
        try:
            params = self._build_params(state["params"])
            bit_generator = getattr(np.random, state["rng"]["bit_generator"])()
            bit_generator.state = state["rng"]
            observations = [Observation.from_dict(o) for o in state["observations"]]
            seed, num_asks = int(state["seed"]), int(state["num_asks"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"search state for strategy {self.name!r} is corrupt: {error}") from error
        self.params, self.seed, self.num_asks = params, seed, num_asks
        self.rng = np.random.Generator(bit_generator)
        self.observations = observations
        try:
            self._load_memory(state.get("memory", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"search memory of strategy {self.name!r} is corrupt: {error!r}") from error

    def _memory_state(self) -> dict[str, Any]:
        """Return strategy-specific memory as JSON-serializable data."""
        return {}

    def _load_memory(self, memory: Mapping[str, Any]) -> None:
        """Restore :meth:`_memory_state` output."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, params={self.params})"


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[SearchStrategy]] = {}

StrategyType = TypeVar("StrategyType", bound=type[SearchStrategy])


def register_strategy(
    cls_or_name: type[SearchStrategy] | str, *, overwrite: bool = False
) -> Any:
    """Register a strategy class under its ``name`` (decorator), or under an explicit name.

    ``@register_strategy`` uses the class's ``name``; ``@register_strategy("alias")``
    uses ``"alias"`` and sets ``name`` on a class that has none. Registering a
    different class under a taken name raises unless ``overwrite`` is True.
    """
    if isinstance(cls_or_name, str):
        return lambda cls: _register(cls, cls_or_name, overwrite)
    return _register(cls_or_name, getattr(cls_or_name, "name", ""), overwrite)


def _register(cls: StrategyType, name: str, overwrite: bool) -> StrategyType:
    if not (isinstance(cls, type) and issubclass(cls, SearchStrategy)):
        raise SearchError(f"{cls!r} is not a SearchStrategy subclass and cannot be registered")
    if not isinstance(name, str) or not name:
        raise SearchError(f"strategy class {cls.__name__} has no name; set the class attribute name or pass one")
    if not cls.name:
        cls.name = name
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls and not overwrite:
        raise SearchError(
            f"strategy name {name!r} is already registered to {existing.__name__}; "
            f"pick another name or pass overwrite=True"
        )
    _REGISTRY[name] = cls
    return cls


def get_strategy(name: str) -> type[SearchStrategy]:
    """Return the strategy class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise SearchError(
            f"unknown search strategy {name!r}; available strategies: {available_strategies()}"
        ) from None


def create_strategy(name: str, space: SearchSpace, seed: int = 0, **params: Any) -> SearchStrategy:
    """Instantiate the strategy registered as ``name`` with ``params``."""
    return get_strategy(name)(space, seed=seed, **params)


def available_strategies() -> list[str]:
    """Return the registered strategy names, sorted."""
    return sorted(_REGISTRY)

