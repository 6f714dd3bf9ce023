"""Central differential privacy on the weight path (``weights`` privacy mode).

With ``dp-clipping-norm`` C > 0 every round's weight update becomes a Gaussian mechanism,
built on Flower's DP primitives (``flwr.supercore.differential_privacy``, the functions
behind ``fixedclipping_mod`` and ``DifferentialPrivacyServerSideFixedClipping``):

1. Clipping, on both sides. The server sends C in the message config under Flower's
   ``clipping_norm`` key, and the client clips its update before replying
   (:func:`clip_update`). The update is the difference between the weights it returns
   and the weights it received, over all its candidates together. The server clips
   every accepted update again, so a client that skips the step gains nothing.
2. Aggregation (:func:`dp_masked_fedavg`): each client's clipped candidate updates are
   mapped into the supernet and scaled by 1 / (its number of candidates). The sum over
   clients is divided by the number of clients sampled in the round, n, and not by how
   many replied. Removing or adding one client therefore changes the aggregate by at
   most C / n in L2 norm, the sensitivity that Flower's ``compute_stdv`` assumes.
3. Noise: Gaussian noise with standard deviation ``noise_multiplier * C / n`` is added to
   every supernet entry that some update covers. The noise comes from a generator seeded
   by the operating system, never from the run seed, which is stored in the report.

Only floating-point parameters and buffers are updated. Integer BatchNorm counters keep
their value, and noisy BatchNorm variances are clamped to at least :data:`MIN_VARIANCE`
(post-processing, which costs no privacy). Metrics (accuracy, latency) are not covered.
:func:`gaussian_epsilon` reports the epsilon of the composed rounds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from flwr.supercore.differential_privacy import compute_clip_model_update, compute_stdv, get_norm

from nas.errors import ApfpError, ReportError
from nas.supernet import ElasticSupernet
from fl_server.weight_aggregation import WeightUpdate

logger = logging.getLogger(__name__)

MIN_VARIANCE = 1e-5
NORM_TOLERANCE = 1e-5  # float32 rounding lets a clipped update's norm exceed C by about this fraction
DEFAULT_DELTA = 1e-5


@dataclass(frozen=True)
class DpSettings:
    """Fixed-clipping central DP: clipping norm C (L2, 0 turns DP off) and noise multiplier z."""

    clipping_norm: float = 0.0
    noise_multiplier: float = 0.0
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        for key, value in (("dp-clipping-norm", self.clipping_norm), ("dp-noise-multiplier", self.noise_multiplier)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ApfpError(f"run config {key}={value!r} is invalid; use a finite number >= 0")
        if self.noise_multiplier > 0 and self.clipping_norm == 0:
            raise ApfpError(f"run config dp-noise-multiplier={self.noise_multiplier!r} needs dp-clipping-norm > 0; "
                            "set a clipping norm (the L2 bound of one client's update)")

    @property
    def enabled(self) -> bool:
        return self.clipping_norm > 0

    def noise_stdv(self, num_sampled: int) -> float:
        """Return the noise standard deviation for a round with ``num_sampled`` clients (Flower's formula)."""
        return compute_stdv(self.noise_multiplier, self.clipping_norm, num_sampled)

    def to_dict(self) -> dict[str, Any]:
        return {"clipping": "fixed", "clipping_norm": self.clipping_norm, "noise_multiplier": self.noise_multiplier,
                "delta": self.delta}


def clip_update(
    sent: Mapping[str, Mapping[str, np.ndarray]], returned: Mapping[str, Mapping[str, np.ndarray]],
    clipping_norm: float,
) -> tuple[dict[str, dict[str, np.ndarray]], float]:
    """Clip the joint update ``returned - sent`` of all candidates to L2 norm ``clipping_norm``.

    Both arguments map candidate id to a state dict with the same keys. Only floating
    arrays count and change; other arrays are returned as they are. Returns the clipped
    states and the update's L2 norm before clipping.
    """
    keys = [(cid, key) for cid in sorted(returned) for key in returned[cid]
            if np.issubdtype(np.asarray(returned[cid][key]).dtype, np.floating)]
    missing = [f"{cid}/{key}" for cid, key in keys if key not in sent.get(cid, {})]
    if missing:
        raise ReportError(f"cannot clip: weights {missing[:3]} were not sent, so their update is unknown")
    new = [np.array(returned[cid][key], copy=True) for cid, key in keys]
    old = [np.asarray(sent[cid][key], dtype=new[i].dtype) for i, (cid, key) in enumerate(keys)]
    norm = get_norm([a - b for a, b in zip(new, old)])
    if norm > clipping_norm:  # Flower's helper divides by the norm, so a zero update must skip it
        compute_clip_model_update(new, old, clipping_norm)
    clipped = {cid: dict(state) for cid, state in returned.items()}
    for (cid, key), value in zip(keys, new):
        clipped[cid][key] = value.astype(np.asarray(returned[cid][key]).dtype, copy=False)
    return clipped, norm


def dp_masked_fedavg(
    supernet: ElasticSupernet, updates: Sequence[WeightUpdate], settings: DpSettings, num_sampled: int,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return the new supernet state and a record of the round's DP step (see the module docstring).

    ``updates`` are the accepted candidate updates of the round; ``num_sampled`` is the
    number of clients the round's messages went to.
    """
    if not settings.enabled:
        raise ApfpError("dp_masked_fedavg needs dp-clipping-norm > 0")
    if num_sampled < 1:
        raise ApfpError(f"num_sampled={num_sampled!r} is invalid; a DP round needs at least one sampled client")
    state = supernet.state_dict()
    sums = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state.items() if v.is_floating_point()}
    covered = {k: torch.zeros_like(v, dtype=torch.bool) for k, v in sums.items()}
    norms, clipped_count = {}, 0
    by_client: dict[int, list[WeightUpdate]] = {}
    for update in updates:
        by_client.setdefault(update.node_id, []).append(update)
    for node, client_updates in sorted(by_client.items()):
        ids = [f"u{i}" for i in range(len(client_updates))]
        sent = {cid: {k: v.numpy() for k, v in supernet.subnet_state(u.arch).items()}
                for cid, u in zip(ids, client_updates)}
        returned = {cid: dict(u.state) for cid, u in zip(ids, client_updates)}
        clipped, norm = clip_update(sent, returned, settings.clipping_norm)
        norms[node] = norm
        clipped_count += int(norm > settings.clipping_norm * (1 + NORM_TOLERANCE))
        scale = 1.0 / len(client_updates)
        for cid, update in zip(ids, client_updates):
            for key, (super_key, slices) in supernet.subnet_index(update.arch).items():
                if super_key not in sums:
                    continue
                delta = torch.as_tensor(clipped[cid][key] - sent[cid][key], dtype=torch.float64)
                sums[super_key][slices] += scale * delta
                covered[super_key][slices] = True

    rng = rng if rng is not None else np.random.default_rng()
    stdv = settings.noise_stdv(num_sampled)
    merged = {}
    for key, tensor in state.items():
        if key not in sums:
            merged[key] = tensor.detach().clone()
            continue
        step = sums[key] / num_sampled
        if stdv > 0:
            step += torch.as_tensor(rng.normal(0.0, stdv, size=tuple(step.shape)))
        value = tensor.detach().to(torch.float64) + torch.where(covered[key], step, torch.zeros_like(step))
        if key.endswith("running_var"):
            value = value.clamp_min(MIN_VARIANCE)
        merged[key] = value.to(tensor.dtype)
    record = {
        "num_sampled": num_sampled, "num_clients_merged": len(by_client), "noise_stdv": stdv,
        "update_norms": {str(node): norm for node, norm in norms.items()}, "clipped_updates": clipped_count,
    }
    logger.info("DP step: %d of %d sampled clients merged, %d clipped to %.4g, noise stdv %.4g", len(by_client),
                num_sampled, clipped_count, settings.clipping_norm, stdv)
    return merged, record


def gaussian_epsilon(noise_multiplier: float, releases: int, delta: float = DEFAULT_DELTA) -> float | None:
    """Return epsilon at ``delta`` of ``releases`` Gaussian releases with ``noise_multiplier``; None without noise.

    Uses the Renyi-DP bound of the Gaussian mechanism with L2 sensitivity 1 and noise
    multiplier z: order ``a`` costs ``releases * a / (2 z**2)``, converted with
    ``eps = rdp + log(1 / delta) / (a - 1)`` and minimized over a grid of orders in (1, 512].
    No amplification by client sampling is assumed, so the bound is conservative.
    """
    if noise_multiplier <= 0 or releases <= 0:
        return None if noise_multiplier <= 0 else 0.0
    orders = np.concatenate([np.linspace(1.01, 10.0, 200), np.linspace(10.5, 512.0, 400)])
    epsilons = releases * orders / (2.0 * noise_multiplier**2) + math.log(1.0 / delta) / (orders - 1.0)
    return float(epsilons.min())


def privacy_record(mode: str, settings: DpSettings, rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the report's privacy section: the mode and, with DP on, its parameters, releases and epsilon.

    Every round record with a ``dp`` entry counts as one release.
    """
    record: dict[str, Any] = {"mode": mode, "dp": None}
    if settings.enabled:
        releases = sum(1 for r in rounds if r.get("dp"))
        record["dp"] = {
            **settings.to_dict(), "clipping_side": "client and server", "releases": releases,
            "epsilon": gaussian_epsilon(settings.noise_multiplier, releases, settings.delta),
            "accounting": "Renyi DP of the Gaussian mechanism, no sampling amplification, add/remove one client",
        }
    return record
