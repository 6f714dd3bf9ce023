"""Cost: CPU seconds of the whole two-stage run against training the candidates from scratch.

The two-stage run is measured end to end: stage 1 (:func:`fl_server.pretrain.pretrain`,
in this process) and stage 2 through Flower's simulation runtime
(:func:`bench.flower_runs.measured_simulation`, every Flower and Ray process
included). It evaluates N distinct candidate architectures and recommends one per
(device, budget), with a test accuracy measured by the clients.

The baseline trains candidates without the supernet: each from random
initialization on the whole private train split (centralized, which is cheaper than
training it federated), with the supernet recipe (SGD, Nesterov, lr 0.05, batch 64,
cosine decay over ``--max-epochs``). After each epoch it is scored on the private
test split, and training stops when it reaches the median test accuracy of the
two-stage recommendations minus ``--margin``. Only training CPU time counts, not
the scoring. ``--train`` randomly chosen candidates are trained, and their mean CPU
time times N estimates the cost of training all N. A candidate that never reaches
the accuracy stops at ``--max-epochs``, so its cost and the ratio are lower bounds.

Run: ``python -m bench.cost`` (full: the digits demo settings), ``--quick``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bench.clients import private_splits
from bench.common import Outcome, Stopwatch, Target, main as bench_main, percent, run_cli
from bench.flower_runs import budget_rows, measured_simulation, round_rows
from bench.stage1 import DATASETS, data_root_for, parse_overrides, scenario_for, stage1_config
from fl_server.pretrain import pretrain
from nas.data import ArraySplit
from nas.evaluate import evaluate
from nas.finetune import make_loader, make_optimizer
from nas.space import Architecture, SearchSpace
from nas.subnet import Subnet

logger = logging.getLogger(__name__)

NAME = "cost"
FULL = {"train": 3, "max_epochs": 40, "overrides": {}}
QUICK = {"train": 1, "max_epochs": 2,
         "overrides": {"num-rounds": "1", "num-supernodes": "2", "min-clients": "2", "max-steps": "3"}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits",
                        help="dataset and built-in scenario of the two-stage run (default: %(default)s)")
    parser.add_argument("--data-root", type=Path, default=None, help="folder with retinamnist.npz")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a scenario setting of stage 2 (repeatable)")
    parser.add_argument("--train", type=int, default=None,
                        help=f"candidates trained from scratch (default: {FULL['train']}, quick: {QUICK['train']})")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help=f"epoch limit of a from-scratch training (default: {FULL['max_epochs']}, "
                             f"quick: {QUICK['max_epochs']})")
    parser.add_argument("--margin", type=float, default=0.01,
                        help="accuracy (fraction) below the two-stage accuracy that counts as comparable "
                             "(default: %(default)s)")


def train_from_scratch(space: SearchSpace, arch: Architecture, train: ArraySplit, test: ArraySplit, *,
                       target: float, max_epochs: int, task: str, seed: int) -> dict[str, Any]:
    """Train ``arch`` from random initialization until its test accuracy reaches ``target``.

    Returns the training CPU seconds until then, the epochs run, the accuracy per
    epoch and whether ``target`` was reached.
    """
    model = Subnet(space, arch, seed=seed)
    loader = make_loader(train, 64, shuffle=True, seed=seed, drop_last=True)
    optimizer, schedule = make_optimizer(model, lr=0.05, total_steps=max_epochs * len(loader))
    cpu, history = 0.0, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(1, max_epochs + 1):
            started = time.process_time()
            model.train()
            for x, y in loader:
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            cpu += time.process_time() - started
            history.append(evaluate(model, test, task=task).accuracy)
            if history[-1] >= target:
                break
    return {"arch": arch.to_dict(), "cpu_s": cpu, "epochs": len(history), "accuracy_by_epoch": history,
            "reached": history[-1] >= target}


def candidates_of(history: dict[str, Any]) -> list[Architecture]:
    """Return the distinct architectures the clients evaluated in the search rounds, in first-seen order."""
    seen: dict[str, Architecture] = {}
    for entry in history.get("rounds", []):
        for observation in entry.get("observations", []):
            key = json.dumps(observation["arch"], sort_keys=True)
            seen.setdefault(key, Architecture.from_dict(observation["arch"]))
    return list(seen.values())


def run(args: argparse.Namespace) -> Outcome:
    settings = QUICK if args.quick else FULL
    choice = DATASETS[args.dataset]
    overrides = {**settings["overrides"], "seed": str(args.seeds[0]), **parse_overrides(args.overrides)}
    scenario = scenario_for(choice, overrides)
    root = data_root_for(choice, args.data_root)
    work = args.cache_dir / f"cost-{choice.key}{'-quick' if args.quick else ''}"

    config = stage1_config(choice, scenario, root, args.quick)
    watch = Stopwatch().start()
    run_dir = pretrain(work / "pretrain", config)
    stage1 = watch.elapsed()
    stage1["cpu_total_s"] = stage1["cpu_self_s"] + stage1["cpu_children_s"]
    history, stage2 = measured_simulation(choice.scenario, run_dir=run_dir.path, output_dir=work / "federated",
                                          overrides=overrides, data_root=root)
    two_stage_cpu = stage1["cpu_total_s"] + stage2["cpu_total_s"]

    candidates = candidates_of(history)
    accuracies = [r["measured_accuracy"] for r in history.get("recommendations", [])
                  if r.get("measured_accuracy") is not None]
    if not candidates or not accuracies:
        raise RuntimeError(f"the two-stage run produced no candidates or no measured recommendation; "
                           f"see {work / 'federated' / 'flwr-run.log'}")
    target = float(np.median(accuracies)) - args.margin
    splits = private_splits(run_dir, str(root) if root else None)
    rng = np.random.default_rng(args.seeds[0])
    count = min(args.train or settings["train"], len(candidates))
    picks = [candidates[i] for i in sorted(rng.choice(len(candidates), size=count, replace=False))]
    scratch = [train_from_scratch(run_dir.space, arch, splits.train, splits.test, target=target,
                                  max_epochs=args.max_epochs or settings["max_epochs"], task=splits.task, seed=index)
               for index, arch in enumerate(picks)]
    per_candidate = float(np.mean([s["cpu_s"] for s in scratch]))
    scratch_cpu = per_candidate * len(candidates)
    ratio = scratch_cpu / two_stage_cpu
    all_reached = all(s["reached"] for s in scratch)
    budgets = budget_rows(history)

    results = {
        "stage1": {**stage1, "report_timings_s": run_dir.report.get("timings_s")},
        "stage2": {k: v for k, v in stage2.items() if k != "process_names"},
        "stage2_processes": stage2.get("process_names"),
        "stage2_rounds": round_rows(history),
        "two_stage_cpu_s": two_stage_cpu,
        "candidates": len(candidates),
        "target_accuracy": target,
        "recommendation_test_accuracy": accuracies,
        "scratch": scratch,
        "scratch_cpu_per_candidate_s": per_candidate,
        "scratch_cpu_estimate_s": scratch_cpu,
        "ratio": ratio,
        "ratio_is_lower_bound": not all_reached,
        "budgets": budgets,
    }
    targets = [
        Target("two-stage run cheaper than training the candidates from scratch", ">= 10x", ratio, ratio >= 10,
               f"{len(candidates)} candidates, {count} trained from scratch"
               + ("" if all_reached else "; a from-scratch run hit the epoch limit, so the ratio is a lower bound")),
        Target("stage-2 recommendations meeting the budget", "100% (measured by the clients)", budgets["met_share"],
               budgets["met_share"] is not None and budgets["met_share"] >= 1.0,
               f"with the profile tolerance: {percent(budgets['met_share_with_tolerance'])}"),
    ]
    stage1_settings = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return Outcome({"dataset": choice.key, "overrides": overrides, "stage1": stage1_settings, "train": count,
                    "max_epochs": args.max_epochs or settings["max_epochs"], "margin": args.margin},
                   results, targets)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark with command-line ``argv`` and return the path of its JSON result."""
    return bench_main(NAME, __doc__, add_arguments, run, argv, default_seeds=1)


if __name__ == "__main__":
    run_cli(main)
