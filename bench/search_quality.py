"""Search quality: true accuracy of the recommendations at an equal budget of client evaluations.

For each dataset (the digits and RetinaMNIST scenarios), every strategy gets the
same number of client evaluations per device. The strategies are the APFP-NAS
method (surrogate-guided simulated annealing with corrections, stage 2 without
Flower) and three black-box baselines: regularized evolution, random search and
Optuna NSGA-II (see :mod:`bench.search_runs`). Each recommended architecture per
(device, budget) is then scored by its true accuracy: fine-tuned on every
client's private train split and evaluated on its test split, pooled over clients.
The oracle is the best true accuracy among an exhaustively evaluated pool of
random subnets whose measured latency meets the budget. Every recommendation's
latency is measured again afresh to count the share that meets its budget.

Run: ``python -m bench.search_quality`` (full), ``--quick`` (digits, small).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.clients import PrivateClients
from bench.common import Outcome, Target, main as bench_main, percent, run_cli, spread
from bench.pool import PoolEntry, build_pool, oracle
from bench.search_runs import BASELINES, METHOD, SearchRun, evaluation_budget, run_blackbox, run_method
from bench.stage1 import add_stage1_arguments, data_root_for, load_stage1, scenario_for, selected_datasets
from nas.errors import ApfpError
from nas.space import Architecture

logger = logging.getLogger(__name__)

NAME = "search_quality"
FULL = {"pool": 120, "rounds": 6}
QUICK = {"pool": 12, "rounds": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage1_arguments(parser)
    parser.add_argument("--pool", type=int, default=None,
                        help=f"oracle pool size in architectures (default: {FULL['pool']}, quick: {QUICK['pool']})")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"search rounds; every client evaluates its candidates once per round "
                             f"(default: {FULL['rounds']}, quick: {QUICK['rounds']})")
    parser.add_argument("--candidates-per-client", type=int, default=None,
                        help="candidates per client per round (default: the scenario's candidates-per-client)")
    parser.add_argument("--strategies", default=",".join((METHOD, *BASELINES)),
                        help="comma list of strategies to compare (default: %(default)s)")
    parser.add_argument("--method-strategy", default="annealing",
                        help="search strategy inside the method (default: %(default)s)")


def score_run(search: SearchRun, clients: PrivateClients, pool: list[PoolEntry]) -> list[dict[str, Any]]:
    """Return every recommendation of ``search`` with its true accuracy, fresh latency and oracle gap."""
    rows = []
    for rec in search.recommendations:
        device, budget = rec["device"], float(rec["budget_ms"])
        best = oracle(pool, device, budget)
        row = {"device": device, "budget_ms": budget, "source": rec["source"],
               "observed_accuracy": rec.get("observed_accuracy"),
               "oracle_accuracy": best.true_accuracy if best else None}
        arch: Architecture | None = rec["arch"]
        if arch is None:
            row.update(arch=None, true_accuracy=None, fresh_latency_ms=None, meets_budget=False,
                       meets_budget_with_tolerance=False, gap_to_oracle=None)
        else:
            tolerance = clients.run.profiles[device].tolerance
            accuracy = clients.true_accuracy(arch)
            latency = clients.latency_ms(arch, device, fresh=True)
            row.update(arch=arch.to_dict(), arch_text=str(arch), true_accuracy=accuracy, fresh_latency_ms=latency,
                       meets_budget=latency <= budget, meets_budget_with_tolerance=latency <= budget * (1 + tolerance),
                       gap_to_oracle=accuracy - best.true_accuracy if best else None)
        rows.append(row)
    return rows


def summarize(runs: list[dict[str, Any]], oracle_rows: list[dict[str, Any]], strategies: Sequence[str]) -> dict:
    """Return per-strategy medians and spreads over seeds, and per-target medians."""
    oracle_mean = float(np.mean([r["true_accuracy"] for r in oracle_rows if r["true_accuracy"] is not None]))
    summary: dict[str, Any] = {"oracle_mean_accuracy": oracle_mean, "strategies": {}}
    for name in strategies:
        mine = [r for r in runs if r["strategy"] == name]
        per_seed = [float(np.mean([x["true_accuracy"] if x["true_accuracy"] is not None else 0.0
                                   for x in r["recommendations"]])) for r in mine]
        recs = [x for r in mine for x in r["recommendations"]]
        targets = []
        for o in oracle_rows:
            values = [x["true_accuracy"] for x in recs
                      if x["device"] == o["device"] and x["budget_ms"] == o["budget_ms"]]
            targets.append({"device": o["device"], "budget_ms": o["budget_ms"], "oracle": o["true_accuracy"],
                            **spread(values)})
        summary["strategies"][name] = {
            "mean_true_accuracy": spread(per_seed),
            "gap_to_oracle": spread([v - oracle_mean for v in per_seed]),
            "per_target": targets,
            "budget_met_share": float(np.mean([x["meets_budget"] for x in recs])) if recs else None,
            "budget_met_share_with_tolerance": (
                float(np.mean([x["meets_budget_with_tolerance"] for x in recs])) if recs else None),
            "client_evaluations": spread([r["client_evaluations"] for r in mine]),
        }
    return summary


def run_dataset(choice: Any, args: argparse.Namespace, strategies: list[str]) -> dict[str, Any]:
    scenario = scenario_for(choice, args.overrides)
    run, stage1 = load_stage1(choice, scenario, args)
    root = data_root_for(choice, args.data_root)
    clients = PrivateClients(run, scenario, str(root) if root else None)
    settings = QUICK if args.quick else FULL
    rounds = args.rounds or settings["rounds"]
    k = args.candidates_per_client or int(clients.config["candidates-per-client"])
    budget = evaluation_budget(clients, rounds, k)
    pool = build_pool(clients, args.pool or settings["pool"], seed=0, cache_dir=args.cache_dir)

    oracle_rows = []
    for device in clients.device_names:
        for budget_ms in run.budgets[device]:
            best = oracle(pool, device, budget_ms)
            oracle_rows.append({"device": device, "budget_ms": budget_ms,
                                "true_accuracy": best.true_accuracy if best else None,
                                "latency_ms": best.latency_ms[device] if best else None,
                                "arch": best.arch.to_dict() if best else None,
                                "pool_fitting": sum(e.latency_ms[device] <= budget_ms for e in pool)})
    runs = []
    for seed in args.seeds:
        for name in strategies:
            before = clients.evaluations_run
            if name == METHOD:
                search = run_method(clients, rounds=rounds, candidates_per_client=k, seed=seed,
                                    strategy=args.method_strategy)
            else:
                search = run_blackbox(clients, name, budget=budget, seed=seed)
            searched = clients.evaluations_run - before
            rows = score_run(search, clients, pool)
            runs.append({"strategy": name, "seed": seed, "client_evaluations": len(search.observations),
                         "new_evaluations_run": searched, "seconds": search.seconds, "recommendations": rows})
            logger.info("%s %s seed %d: mean true accuracy %.3f over %d recommendations", choice.key, name, seed,
                        np.mean([r["true_accuracy"] or 0.0 for r in rows]), len(rows))
    true_accuracies = [e.true_accuracy for e in pool]
    return {
        "stage1": stage1,
        "clients": clients.describe(),
        "budgets_ms": {d: run.budgets[d] for d in clients.device_names},
        "evaluations_per_device": budget,
        "rounds": rounds, "candidates_per_client": k, "method_strategy": args.method_strategy,
        "pool": {"size": len(pool), "true_accuracy": spread(true_accuracies)},
        "oracle": oracle_rows,
        "runs": runs,
        "summary": summarize(runs, oracle_rows, strategies),
    }


def targets_for(key: str, summary: dict[str, Any]) -> list[Target]:
    """Check the method against every baseline and the oracle, and the budget share of every strategy."""
    found = summary["strategies"]
    targets = []
    if METHOD in found:
        method = found[METHOD]["mean_true_accuracy"]["median"]
        for name in (n for n in found if n != METHOD):
            other = found[name]["mean_true_accuracy"]["median"]
            targets.append(Target(f"{key}: method >= {name}", ">= baseline (median over seeds, mean over budgets)",
                                  {"method": method, name: other}, method >= other))
        gap = found[METHOD]["gap_to_oracle"]["median"]
        targets.append(Target(f"{key}: method gap to oracle", ">= -0.01 (1 accuracy point)", gap, gap >= -0.01))
    for name, values in found.items():
        share = values["budget_met_share"]
        targets.append(Target(f"{key}: {name} recommendations meeting the budget", "100% (fresh measurement)",
                              share, share is not None and share >= 1.0,
                              f"with the profile tolerance: {percent(values['budget_met_share_with_tolerance'])}"))
    return targets


def run(args: argparse.Namespace) -> Outcome:
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(strategies) - {METHOD, *BASELINES})
    if unknown or not strategies:
        raise ApfpError(f"--strategies {args.strategies!r} is invalid; choose from {[METHOD, *BASELINES]}")
    results, targets = {}, []
    for choice in selected_datasets(args):
        results[choice.key] = run_dataset(choice, args, strategies)
        targets += targets_for(choice.key, results[choice.key]["summary"])
    settings = {"strategies": strategies, "pool": args.pool or (QUICK if args.quick else FULL)["pool"],
                "rounds": args.rounds or (QUICK if args.quick else FULL)["rounds"], "overrides": args.overrides}
    return Outcome(settings, {"datasets": results}, targets)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark with command-line ``argv`` and return the path of its JSON result."""
    return bench_main(NAME, __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    run_cli(main)
