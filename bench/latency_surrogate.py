"""Latency surrogate: share within ±10% and MAPE per built-in profile, beside the FLOPs-linear baseline.

The search space of each dataset is measured: digits (1x16x16, 10 classes) and
RetinaMNIST (3x28x28, 5 classes). ``--samples`` distinct subnets (the smallest,
the largest, then random draws) are exported to ONNX and timed under every
built-in hardware profile with the real measurement protocol. Per seed they are split into two
thirds to fit a :class:`surrogate.LatencyPredictor` and a
:class:`surrogate.FlopsLinearBaseline`, and one third held out.

Measurement noise bounds what any predictor can reach, so ``--repeat`` held-out
subnets are timed a second time. The share of second measurements within ±10% of
the first is reported beside the predictors as the noise reference.

Run: ``python -m bench.latency_surrogate`` (full), ``--quick`` (one space, few subnets).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.common import Outcome, Target, main as bench_main, run_cli, spread
from fl_server.pretrain import sample_distinct
from hw_profiles import builtin_profiles, load_profile, measure_latency
from nas.errors import ApfpError
from nas.export import export_onnx
from nas.space import SearchSpace
from nas.subnet import Subnet
from surrogate import FlopsLinearBaseline, LatencyPredictor, kendall_tau, mape, within_tolerance_share

logger = logging.getLogger(__name__)

NAME = "latency_surrogate"
SPACES = {
    "digits": SearchSpace.for_task(in_channels=1, num_classes=10, resolution=16),
    "retinamnist": SearchSpace.for_task(in_channels=3, num_classes=5, resolution=28),
}
FULL = {"samples": 120, "repeat": 40, "spaces": ("digits", "retinamnist")}
QUICK = {"samples": 18, "repeat": 6, "spaces": ("digits",)}
TOLERANCE = 0.10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=None,
                        help=f"subnets timed per space (default: {FULL['samples']}, quick: {QUICK['samples']})")
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"subnets timed twice for the noise reference (default: {FULL['repeat']}, "
                             f"quick: {QUICK['repeat']})")
    parser.add_argument("--profiles", default=None,
                        help="comma list of hardware profiles (default: every built-in profile)")
    parser.add_argument("--spaces", default=None, help=f"comma list of {sorted(SPACES)} (default: all; quick: digits)")


def measure_space(space: SearchSpace, profiles: list[str], count: int) -> tuple[list, dict[str, np.ndarray], dict]:
    """Export ``count`` distinct subnets once each and time them under every profile (ms)."""
    archs = sample_distinct(space, count, np.random.default_rng(0))
    shape = (space.in_channels, space.resolution, space.resolution)
    latency = {p: np.empty(len(archs)) for p in profiles}
    models = {}
    for index, arch in enumerate(archs):
        models[arch] = export_onnx(Subnet(space, arch, seed=0), input_shape=shape)
        for profile in profiles:
            latency[profile][index] = measure_latency(models[arch], load_profile(profile)).median_ms
        if (index + 1) % 20 == 0:
            logger.info("timed %d/%d subnets of the %dpx space", index + 1, len(archs), space.resolution)
    return archs, latency, models


def _scores(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"within_10pct": within_tolerance_share(measured, predicted, TOLERANCE), "mape": mape(measured, predicted),
            "kendall_tau": kendall_tau(measured, predicted)}


def evaluate_profile(space: SearchSpace, archs: list, latency: np.ndarray, profile: str,
                     seeds: Sequence[int]) -> dict[str, Any]:
    """Fit both predictors per seed on two thirds of the subnets and score them on the rest."""
    per_seed, pooled = [], {"measured": [], "predictor": [], "baseline": []}
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(archs))
        held = max(2, len(archs) // 3)
        test, train = order[:held], order[held:]
        train_archs, test_archs = [archs[i] for i in train], [archs[i] for i in test]
        predictor = LatencyPredictor(space, profile, seed=seed).fit(train_archs, latency[train])
        predicted = np.asarray(predictor.predict(test_archs).mean)
        baseline = FlopsLinearBaseline(space).fit(train_archs, latency[train]).predict(test_archs)
        per_seed.append({"seed": seed, "train": len(train), "held_out": len(test),
                         "predictor": _scores(latency[test], predicted),
                         "flops_baseline": _scores(latency[test], baseline)})
        pooled["measured"] += latency[test].tolist()
        pooled["predictor"] += predicted.tolist()
        pooled["baseline"] += baseline.tolist()
    measured = np.array(pooled["measured"])
    return {
        "latency_range_ms": [float(latency.min()), float(latency.max())],
        "per_seed": per_seed,
        "predictor": _scores(measured, np.array(pooled["predictor"])),
        "flops_baseline": _scores(measured, np.array(pooled["baseline"])),
        "predictor_within_10pct_by_seed": spread([r["predictor"]["within_10pct"] for r in per_seed]),
        "held_out_predictions": len(measured),
    }


def noise_reference(models: dict, archs: list, latency: dict[str, np.ndarray], count: int) -> dict[str, Any]:
    """Time ``count`` subnets again under every profile; score the second timing against the first."""
    picks = np.random.default_rng(1).permutation(len(archs))[:count]
    result = {}
    for profile, first in latency.items():
        second = np.array([measure_latency(models[archs[i]], load_profile(profile)).median_ms for i in picks])
        result[profile] = {"n": len(picks), **_scores(first[picks], second)}
    return result


def run(args: argparse.Namespace) -> Outcome:
    settings = QUICK if args.quick else FULL
    samples = args.samples or settings["samples"]
    repeat = args.repeat if args.repeat is not None else settings["repeat"]
    profiles = ([p.strip() for p in args.profiles.split(",") if p.strip()] if args.profiles
                else sorted(builtin_profiles()))
    for name in profiles:
        load_profile(name)  # raises ProfileError naming an unknown profile before any measurement
    spaces = [s.strip() for s in args.spaces.split(",")] if args.spaces else list(settings["spaces"])
    unknown = sorted(set(spaces) - set(SPACES))
    if unknown:
        raise ApfpError(f"--spaces {args.spaces!r} is invalid; choose from {sorted(SPACES)}")
    if samples < 6:
        raise ApfpError(f"--samples {samples} is invalid; use at least 6 so that a third can be held out")

    results, targets = {}, []
    for key in spaces:
        space = SPACES[key]
        archs, latency, models = measure_space(space, profiles, samples)
        noise = noise_reference(models, archs, latency, min(repeat, len(archs))) if repeat else {}
        by_profile = {p: evaluate_profile(space, archs, latency[p], p, args.seeds) for p in profiles}
        for profile, found in by_profile.items():
            found["noise_reference"] = noise.get(profile)
            share = found["predictor"]["within_10pct"]
            noise_share = noise[profile]["within_10pct"] if profile in noise else None
            targets.append(Target(
                f"{key} {profile}: latency predictions within ±10%", ">= 0.99", share, share >= 0.99,
                f"FLOPs-linear baseline {found['flops_baseline']['within_10pct']:.3f}; "
                f"second measurement within ±10% of the first: {noise_share}",
            ))
        results[key] = {"input_shape": [space.in_channels, space.resolution, space.resolution],
                        "samples": len(archs), "profiles": by_profile,
                        "measurements_ms": {p: latency[p].tolist() for p in profiles},
                        "architectures": [a.to_dict() for a in archs]}
    return Outcome({"samples": samples, "repeat": repeat, "profiles": profiles, "spaces": spaces},
                   {"spaces": results}, targets)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark with command-line ``argv`` and return the path of its JSON result."""
    return bench_main(NAME, __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    run_cli(main)
