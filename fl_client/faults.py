"""Failure injection: a ClientApp that fails on purpose, to test how the federation copes.

Run config keys, read by every ClientApp of the run (and checked by the ServerApp at start):

* ``failure-rate`` (float in [0, 1], default 0): the probability that a client fails a
  train message.
* ``failure-modes`` (comma list, default ``raise,timeout,disconnect``): the ways it fails.

Whether the client of partition ``p`` fails in round ``r``, and how, is drawn from
``(seed, r, p)`` only (see :func:`plan_fault`), so a run with failures is reproducible and a
test can compute which clients fail before it starts the run. Only ``train`` messages fail.
The query round and the final evaluation are never injected.

The modes, and what the server observes:

* ``raise``: the handler raises :class:`InjectedFault` before any work, and Flower sends
  the server an error reply.
* ``timeout``: the handler sleeps past the round timeout (:func:`timeout_sleep_s`), then
  works and replies. The server has stopped waiting by then and records no reply.
* ``disconnect``: the handler trains and measures the first candidate, then stops without
  replying. In a ClientApp process of its own (a SuperNode's ``flwr-clientapp``) the process
  exits with status :data:`DISCONNECT_EXIT_CODE`, so the server gets no reply before the
  timeout. In a simulation worker, which also serves other nodes, exiting would kill the
  worker for the rest of the run, so it raises :class:`InjectedDisconnect` and Flower sends
  an error reply instead.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from nas.errors import ApfpError

logger = logging.getLogger(__name__)

FAILURE_MODES = ("raise", "timeout", "disconnect")
TIMEOUT_FACTOR = 1.05
TIMEOUT_MARGIN_S = 1.0
DISCONNECT_EXIT_CODE = 75
_FAULT_STREAM = 0xFA17  # keeps fault draws independent of the client's training seed


class InjectedFault(RuntimeError):
    """The failure that ``failure-mode = raise`` injects into a ClientApp."""


class InjectedDisconnect(ConnectionAbortedError):
    """The ``disconnect`` failure inside a simulation worker, where the process must not exit."""


@dataclass(frozen=True)
class FaultSettings:
    """Failure-injection settings: the failure probability per train message and the allowed modes."""

    rate: float = 0.0
    modes: tuple[str, ...] = FAILURE_MODES
    seed: int = 0
    round_timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0.0 <= self.rate <= 1.0:
            raise ApfpError(f"run config failure-rate={self.rate!r} is invalid; use a probability in [0, 1]")
        unknown = [m for m in self.modes if m not in FAILURE_MODES]
        if unknown or not self.modes:
            raise ApfpError(f"run config failure-modes={','.join(self.modes)!r} is invalid; use a comma list of "
                            f"{', '.join(FAILURE_MODES)}")
        if not math.isfinite(self.round_timeout_s) or self.round_timeout_s <= 0:
            raise ApfpError(f"run config round-timeout={self.round_timeout_s!r} is invalid; use seconds > 0")

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> "FaultSettings":
        """Read ``failure-rate``, ``failure-modes``, ``seed`` and ``round-timeout`` from a run config."""
        text = str(config.get("failure-modes", ",".join(FAILURE_MODES)))
        modes = tuple(m.strip() for m in text.split(",") if m.strip())
        rate = config.get("failure-rate", 0.0)
        rate = float(rate) if isinstance(rate, int) and not isinstance(rate, bool) else rate
        timeout = config.get("round-timeout", 3600.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ApfpError(f"run config round-timeout={timeout!r} is invalid; use seconds > 0")
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ApfpError(f"run config seed={seed!r} is invalid; use an integer >= 0")
        return cls(rate=rate, modes=modes, seed=seed, round_timeout_s=float(timeout))

    @property
    def enabled(self) -> bool:
        return self.rate > 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"failure_rate": self.rate, "failure_modes": list(self.modes)}


def plan_fault(settings: FaultSettings, server_round: int, partition: int) -> str | None:
    """Return the failure mode of partition ``partition`` in round ``server_round``, or None.

    The draw depends only on ``(settings.seed, server_round, partition)``, the rate and the
    modes, so the server, the client and a test all compute the same plan.
    """
    if not settings.enabled:
        return None
    rng = np.random.default_rng([settings.seed, server_round, partition, _FAULT_STREAM])
    draw, choice = rng.random(), int(rng.integers(len(settings.modes)))
    return settings.modes[choice] if draw < settings.rate else None


def timeout_sleep_s(round_timeout_s: float) -> float:
    """Return how long mode ``timeout`` sleeps: 5% past the round timeout plus one second."""
    return round_timeout_s * TIMEOUT_FACTOR + TIMEOUT_MARGIN_S


def in_shared_worker() -> bool:
    """Return True inside a simulation worker (a Ray actor), which serves more than one node."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


class FaultInjector:
    """Apply one planned failure to one train message: call :meth:`before_work` and :meth:`after_candidate`."""

    def __init__(self, settings: FaultSettings, server_round: int, partition: int, node_id: int) -> None:
        self.mode = plan_fault(settings, server_round, partition)
        self.settings, self.round, self.partition, self.node_id = settings, server_round, partition, node_id

    def _describe(self) -> str:
        return f"injected failure '{self.mode}' in round {self.round} on node {self.node_id} (partition {self.partition})"

    def before_work(self) -> None:
        """Raise (mode ``raise``) or sleep past the round timeout (mode ``timeout``); else do nothing."""
        if self.mode is None:
            return
        logger.warning("%s", self._describe())
        if self.mode == "raise":
            raise InjectedFault(self._describe())
        if self.mode == "timeout":
            time.sleep(timeout_sleep_s(self.settings.round_timeout_s))

    def after_candidate(self) -> None:
        """Stop without a reply (mode ``disconnect``) once the first candidate is done."""
        if self.mode != "disconnect":
            return
        if in_shared_worker():
            raise InjectedDisconnect(self._describe() + "; the worker is shared, so it raises instead of exiting")
        logging.shutdown()
        os._exit(DISCONNECT_EXIT_CODE)
