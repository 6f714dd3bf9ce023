"""Scale: peak memory and seconds per round with 10, 30 and 100 simulated clients, 10 sampled per round.

Each size runs stage 2 of the digits scenario through Flower's simulation runtime
with ``num-supernodes`` set to the size and ``clients-per-round`` fixed, so every
round does the same client work whatever the federation size. Peak memory is the
proportional set size (PSS) of this process and every Flower and Ray process,
sampled from /proc (:class:`bench.procs.TreeSampler`). Seconds per round come from
the ServerApp's round timings. The query round before the first search round
and the final evaluation reach every client, so they grow with the federation.
They are reported separately.

A small stage-1 run keeps 60% of digits private, because the partitioner needs at
least one validation sample per client and 100 clients need more than the 89 that
the default half leaves. Its surrogates' quality does not matter here. To bound the
final evaluation, each device keeps one latency budget (the run's median budget).

Run: ``python -m bench.scale`` (full: 10, 30 and 100 clients), ``--quick`` (4 and 8).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.common import Outcome, Target, main as bench_main, run_cli
from bench.flower_runs import measured_simulation, round_rows
from bench.stage1 import DATASETS, cached_stage1, parse_overrides, scenario_for, stage1_config
from nas.errors import ApfpError

logger = logging.getLogger(__name__)

NAME = "scale"
FULL = {"sizes": (10, 30, 100), "sampled": 10, "rounds": 2}
QUICK = {"sizes": (4, 8), "sampled": 2, "rounds": 1}
MEMORY_LIMIT_BYTES = 8 * 2**30
PRIVATE_FRACTION = 0.6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default=None, help="comma list of federation sizes (default: 10,30,100; quick: 4,8)")
    parser.add_argument("--sampled", type=int, default=None,
                        help=f"clients sampled per round (default: {FULL['sampled']}, quick: {QUICK['sampled']})")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"search rounds per size (default: {FULL['rounds']}, quick: {QUICK['rounds']})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a scenario setting (repeatable)")


def run(args: argparse.Namespace) -> Outcome:
    settings = QUICK if args.quick else FULL
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(settings["sizes"])
    sampled = args.sampled or settings["sampled"]
    rounds = args.rounds or settings["rounds"]
    if min(sizes) < sampled:
        raise ApfpError(f"--sizes {sizes} must all be >= --sampled {sampled}")
    choice = DATASETS["digits"]
    scenario = scenario_for(choice, parse_overrides(args.overrides))
    config = dataclasses.replace(stage1_config(choice, scenario, None, True), private_fraction=PRIVATE_FRACTION)
    run_dir, stage1 = cached_stage1(config, args.cache_dir)
    budgets = {d: [float(np.median(v))] for d, v in run_dir.budgets.items()}

    by_size = []
    for size in sizes:
        overrides = {"num-supernodes": str(size), "min-clients": str(size), "clients-per-round": str(sampled),
                     "num-rounds": str(rounds), "budgets": json.dumps(json.dumps(budgets)),
                     "seed": str(args.seeds[0]), **parse_overrides(args.overrides)}
        history, usage = measured_simulation(choice.scenario, run_dir=Path(run_dir.path),
                                             output_dir=args.cache_dir / f"scale-{size}", overrides=overrides)
        rows = round_rows(history)
        final = history.get("final_evaluation", {}).get("timings_s", {})
        by_size.append({
            "clients": size, "sampled_per_round": sampled, "rounds": rows,
            "seconds_per_round": float(np.mean([r["wall_s"] for r in rows])),
            "client_work_per_round_s": float(np.mean([r["client_work_s"] for r in rows])),
            "final_evaluation_s": final.get("total"), "run_duration_s": history.get("duration_s"),
            "wall_s": usage["wall_s"], "cpu_total_s": usage["cpu_total_s"],
            "peak_tree_pss_bytes": usage["peak_tree_pss_bytes"],
            "peak_descendants_pss_bytes": usage["peak_descendants_pss_bytes"],
            "processes": usage["descendant_processes"],
        })
        logger.info("%d clients: %.1f s per round, peak memory %.2f GiB", size, by_size[-1]["seconds_per_round"],
                    usage["peak_tree_pss_bytes"] / 2**30)

    peak = max(r["peak_tree_pss_bytes"] for r in by_size)
    growth = by_size[-1]["seconds_per_round"] / by_size[0]["seconds_per_round"]
    work_growth = by_size[-1]["client_work_per_round_s"] / by_size[0]["client_work_per_round_s"]
    targets = [
        Target("peak memory of the whole simulation", "< 8 GiB", peak / 2**30, peak < MEMORY_LIMIT_BYTES),
        Target(f"seconds per round at {sizes[-1]} clients / at {sizes[0]} clients", "about 1 (<= 1.5)", growth,
               growth <= 1.5, f"client work per round grew {work_growth:.2f}x with the same {sampled} sampled "
                              f"clients; a size-proportional growth would be {sizes[-1] / sizes[0]:.1f}x"),
    ]
    return Outcome({"sizes": sizes, "sampled": sampled, "rounds": rounds, "budgets_ms": budgets,
                    "private_fraction": PRIVATE_FRACTION, "overrides": args.overrides},
                   {"stage1": stage1, "by_size": by_size}, targets)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark with command-line ``argv`` and return the path of its JSON result."""
    return bench_main(NAME, __doc__, add_arguments, run, argv, default_seeds=1)


if __name__ == "__main__":
    run_cli(main)
