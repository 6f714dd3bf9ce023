"""Accuracy surrogate: Kendall tau and regret on public and private subnets, before and after correction.

Public: the stage-1 accuracy samples (subnets of the supernet, BatchNorm
recalibrated, scored on held-out public data) are split per seed into 80% to fit a
fresh surrogate and 20% held out. The baseline is ranking by MACs (bigger is
better), a zero-cost proxy a user could take instead.

Private: the exhaustively evaluated pool of :mod:`bench.pool` gives each subnet's
true private accuracy (client fine-tuning, test splits pooled over clients). Per
seed the pool is shuffled: the first ``max(counts)`` subnets become client reports
(one random client's validation accuracy each, weighted by its validation samples,
as a stage-2 report is), the rest are held out. The stage-1 surrogate is scored on
the held-out subnets uncorrected, then corrected with the first n reports
(:func:`surrogate.correct_accuracy`) for each n in ``--counts``. The baseline is a
surrogate fitted on the n private reports alone, without the public prior.

Regret, per (device, budget): the best true accuracy among held-out subnets within
the budget minus the true accuracy of the one the predictor ranks first (latency:
the stage-1 latency surrogate on public subnets, measured latency on the pool).

Run: ``python -m bench.accuracy_surrogate`` (full), ``--quick`` (digits, small).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.clients import PrivateClients
from bench.common import Outcome, Target, main as bench_main, run_cli, spread
from bench.pool import PoolEntry, build_pool
from bench.stage1 import add_stage1_arguments, data_root_for, load_stage1, scenario_for, selected_datasets
from fl_server.run_dir import RunDirectory
from nas.complexity import count_macs
from nas.errors import ApfpError
from nas.space import Architecture
from surrogate import AccuracyPredictor, correct_accuracy, kendall_tau, regret_within_budget

logger = logging.getLogger(__name__)

NAME = "accuracy_surrogate"
FULL = {"pool": 120, "counts": (8, 16, 32, 48)}
QUICK = {"pool": 24, "counts": (8, 16)}
HELD_OUT_FRACTION = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage1_arguments(parser)
    parser.add_argument("--pool", type=int, default=None,
                        help=f"private pool size in subnets (default: {FULL['pool']}, quick: {QUICK['pool']})")
    parser.add_argument("--counts", default=None,
                        help="comma list of client report counts (default: 8,16,32,48; quick: 8,16)")


def _scores(true: np.ndarray, predicted: np.ndarray, latency: dict[str, np.ndarray],
            budgets: dict[str, list[float]]) -> dict[str, Any]:
    """Return Kendall tau and the mean regret over (device, budget) pairs that any subnet meets."""
    regrets = [regret_within_budget(true, predicted, latency[d], float(b)) for d in budgets for b in budgets[d]]
    finite = [r for r in regrets if not math.isnan(r)]
    return {"kendall_tau": kendall_tau(true, predicted), "mean_regret": float(np.mean(finite)) if finite else None,
            "max_regret": float(np.max(finite)) if finite else None}


def public_part(run: RunDirectory, seeds: Sequence[int]) -> dict[str, Any]:
    """Score fresh surrogates on held-out public subnets, beside the MACs proxy."""
    space = run.space
    archs = [Architecture.from_dict(s["arch"]) for s in run.accuracy_samples]
    accuracy = np.array([s["accuracy"] for s in run.accuracy_samples], dtype=np.float64)
    macs = np.array([count_macs(space, a) for a in archs], dtype=np.float64)
    per_seed = []
    for seed in seeds:
        order = np.random.default_rng(seed).permutation(len(archs))
        held = max(2, int(round(len(archs) * HELD_OUT_FRACTION)))
        test, train = order[:held], order[held:]
        test_archs = [archs[i] for i in test]
        latency = {d: np.asarray(p.predict(test_archs).mean) for d, p in run.latency_predictors.items()}
        model = AccuracyPredictor(space, seed=seed).fit([archs[i] for i in train], accuracy[train])
        per_seed.append({
            "seed": seed, "held_out": int(held),
            "surrogate": _scores(accuracy[test], np.asarray(model.predict(test_archs).mean), latency, run.budgets),
            "macs_proxy": _scores(accuracy[test], macs[test], latency, run.budgets),
        })
    return {
        "num_samples": len(archs), "accuracy_range": [float(accuracy.min()), float(accuracy.max())],
        "per_seed": per_seed,
        "kendall_tau": spread([r["surrogate"]["kendall_tau"] for r in per_seed]),
        "mean_regret": spread([r["surrogate"]["mean_regret"] for r in per_seed]),
        "macs_proxy_kendall_tau": spread([r["macs_proxy"]["kendall_tau"] for r in per_seed]),
        "macs_proxy_mean_regret": spread([r["macs_proxy"]["mean_regret"] for r in per_seed]),
    }


def private_part(run: RunDirectory, pool: list[PoolEntry], counts: Sequence[int], seeds: Sequence[int],
                 budgets: dict[str, list[float]]) -> dict[str, Any]:
    """Score the surrogate on held-out private subnets uncorrected and after n client reports."""
    space, base = run.space, run.accuracy_predictor
    max_reports = max(counts)
    if len(pool) < max_reports + 4:
        raise ValueError(f"pool of {len(pool)} subnets is too small for {max_reports} reports plus 4 held out; "
                         f"raise --pool to at least {max_reports + 4}")
    per_seed = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(pool))
        reports, held = [pool[i] for i in order[:max_reports]], [pool[i] for i in order[max_reports:]]
        clients = [int(rng.choice(sorted(e.scores))) for e in reports]
        observed = np.array([e.scores[c].val_accuracy for e, c in zip(reports, clients)])
        weights = np.array([e.scores[c].num_val for e, c in zip(reports, clients)], dtype=np.float64)
        held_archs = [e.arch for e in held]
        true = np.array([e.true_accuracy for e in held])
        latency = {d: np.array([e.latency_ms[d] for e in held]) for d in budgets}
        pooled_val = np.array([_pooled_val(e) for e in held])
        row: dict[str, Any] = {
            "seed": seed, "held_out": len(held),
            "uncorrected": _scores(true, np.asarray(base.predict(held_archs).mean), latency, budgets),
            "noise_reference_tau": kendall_tau(true, pooled_val), "by_count": [],
        }
        for n in counts:
            archs = [e.arch for e in reports[:n]]
            corrected = correct_accuracy(base, archs, observed[:n], weights[:n])
            scratch = AccuracyPredictor(space, seed=seed).fit(archs, observed[:n], weights[:n])
            row["by_count"].append({
                "reports": n,
                "corrected": _scores(true, np.asarray(corrected.predict(held_archs).mean), latency, budgets),
                "private_only": _scores(true, np.asarray(scratch.predict(held_archs).mean), latency, budgets),
            })
        per_seed.append(row)

    curve = []
    for index, n in enumerate(counts):
        def collect(kind: str, metric: str) -> dict[str, Any]:
            return spread([r["by_count"][index][kind][metric] for r in per_seed])

        curve.append({"reports": n, "corrected_tau": collect("corrected", "kendall_tau"),
                      "corrected_regret": collect("corrected", "mean_regret"),
                      "private_only_tau": collect("private_only", "kendall_tau"),
                      "private_only_regret": collect("private_only", "mean_regret")})
    return {
        "pool": len(pool), "counts": list(counts), "per_seed": per_seed, "curve": curve,
        "uncorrected_tau": spread([r["uncorrected"]["kendall_tau"] for r in per_seed]),
        "uncorrected_regret": spread([r["uncorrected"]["mean_regret"] for r in per_seed]),
        "noise_reference_tau": spread([r["noise_reference_tau"] for r in per_seed]),
        "true_accuracy_range": [min(e.true_accuracy for e in pool), max(e.true_accuracy for e in pool)],
    }


def _pooled_val(entry: PoolEntry) -> float:
    weights = np.array([s.num_val for s in entry.scores.values()], dtype=np.float64)
    return float(np.dot(weights, [s.val_accuracy for s in entry.scores.values()]) / weights.sum())


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def targets_for(key: str, result: dict[str, Any]) -> list[Target]:
    public = result["public"]["kendall_tau"]["median"]
    private = result["private"]
    last = private["curve"][-1]
    after, before = last["corrected_tau"]["median"], private["uncorrected_tau"]["median"]
    gain = None if after is None or before is None else after - before
    note = (f"after {last['reports']} reports; noise reference tau (pooled validation vs test accuracy) "
            f"{_number(private['noise_reference_tau']['median'])}")
    return [
        Target(f"{key}: public Kendall tau", ">= 0.85", public, public is not None and public >= 0.85,
               f"MACs proxy: {_number(result['public']['macs_proxy_kendall_tau']['median'])}"),
        Target(f"{key}: private Kendall tau after correction", ">= 0.75", after,
               after is not None and after >= 0.75, note),
        Target(f"{key}: private tau gain over uncorrected", ">= +0.15", gain, gain is not None and gain >= 0.15, note),
    ]


def run(args: argparse.Namespace) -> Outcome:
    settings = QUICK if args.quick else FULL
    counts = tuple(int(c) for c in args.counts.split(",")) if args.counts else settings["counts"]
    if not counts or min(counts) < 2:
        raise ApfpError(f"--counts {args.counts!r} is invalid; give report counts >= 2")
    results, targets = {}, []
    for choice in selected_datasets(args):
        scenario = scenario_for(choice, args.overrides)
        run_dir, stage1 = load_stage1(choice, scenario, args)
        root = data_root_for(choice, args.data_root)
        clients = PrivateClients(run_dir, scenario, str(root) if root else None)
        pool = build_pool(clients, args.pool or settings["pool"], seed=0, cache_dir=args.cache_dir)
        budgets = {d: run_dir.budgets[d] for d in clients.device_names}
        results[choice.key] = {
            "stage1": stage1, "clients": clients.describe(), "budgets_ms": budgets,
            "public": public_part(run_dir, args.seeds),
            "private": private_part(run_dir, pool, counts, args.seeds, budgets),
        }
        targets += targets_for(choice.key, results[choice.key])
    return Outcome({"pool": args.pool or settings["pool"], "counts": list(counts), "overrides": args.overrides},
                   {"datasets": results}, targets)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark with command-line ``argv`` and return the path of its JSON result."""
    return bench_main(NAME, __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    run_cli(main)
