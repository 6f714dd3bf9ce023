"""The ``apfp-nas`` command line: pretrain, simulate, demo, profile.

This is the only module that prints to the console; everything else logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from nas.errors import ApfpError

log = logging.getLogger("apfp_nas")

DEFAULT_SCENARIO = "digits"


def _add_pretrain_options(parser: argparse.ArgumentParser) -> None:
    from fl_server.pretrain import DEFAULT_PROFILES, PretrainConfig

    defaults = PretrainConfig()
    parser.add_argument("--dataset", default=defaults.dataset,
                        help="public dataset name: digits, medmnist:<flag>, npz:<path>, imagefolder:<path>, cifar10 (default: %(default)s)")
    parser.add_argument("--data-root", default=None, help="folder that holds dataset files (MedMNIST .npz, CIFAR-10)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="model input size in pixels (default: 16 for digits, else the dataset's size)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="supernet training epochs (default: %(default)s)")
    parser.add_argument("--accuracy-samples", type=int, default=defaults.num_accuracy_samples,
                        help="subnets evaluated on held-out public data for the accuracy surrogate (default: %(default)s)")
    parser.add_argument("--latency-samples", type=int, default=defaults.num_latency_samples,
                        help="subnets exported and timed per profile for the latency surrogates (default: %(default)s)")
    parser.add_argument("--profiles", default=",".join(DEFAULT_PROFILES),
                        help="comma-separated hardware profile names or TOML paths (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)")


def _pretrain_config(args: argparse.Namespace):
    from fl_server.pretrain import PretrainConfig

    return PretrainConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        resolution=args.resolution,
        epochs=args.epochs,
        num_accuracy_samples=args.accuracy_samples,
        num_latency_samples=args.latency_samples,
        profiles=tuple(p.strip() for p in args.profiles.split(",") if p.strip()),
        seed=args.seed,
        progress=not args.no_progress,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apfp-nas",
        description="Federated, platform-aware neural architecture search on Flower.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="log debug messages")
    common.add_argument("--no-progress", action="store_true",
                        help="hide progress bars (they are hidden anyway when stderr is not a terminal)")
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser("pretrain", parents=[common], help="stage 1: train the supernet and fit the surrogates")
    _add_pretrain_options(pretrain)
    pretrain.add_argument("--output", default="runs/pretrain", help="run directory to write (default: %(default)s)")

    simulate = commands.add_parser("simulate", parents=[common], help="stage 2: federated search as a Flower simulation on this machine")
    simulate.add_argument("--scenario", default=DEFAULT_SCENARIO,
                          help="scenario TOML file or built-in scenario name: digits, retinamnist (default: %(default)s)")
    simulate.add_argument("--run-dir", required=True, help="stage-1 run directory written by `apfp-nas pretrain`")
    simulate.add_argument("--output", default="runs/federated", help="folder for the stage-2 report (default: %(default)s)")
    simulate.add_argument("--data-root", default=None, help="folder with the private dataset files (MedMNIST .npz)")
    simulate.add_argument("--resume", action="store_true", help="continue a stopped run from its last completed round")
    simulate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a run-config setting, for example --set num-rounds=2 (repeatable); the keys and "
                               "defaults are in [tool.flwr.app.config] of pyproject.toml and docs/deployment.md")

    demo = commands.add_parser("demo", parents=[common], help="run stage 1 and stage 2 on the bundled digits data")
    demo.add_argument("--output", default="runs/demo", help="folder for both stages (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")

    profile = commands.add_parser("profile", parents=[common], help="measure this device and fit its latency predictor")
    profile.add_argument("--profile", default=None,
                         help="built-in profile name or TOML path to measure with (default: write a profile for this device)")
    profile.add_argument("--name", default="my-device", help="name of the profile written for this device (default: %(default)s)")
    profile.add_argument("--budgets", default="p25,p50,p75",
                         help="latency budgets of the written profile: milliseconds or pNN quantiles (default: %(default)s)")
    profile.add_argument("--run-dir", default=None, help="stage-1 run directory whose search space to sample (default: the digits space)")
    profile.add_argument("--samples", type=int, default=100, help="architectures to export and time (default: %(default)s)")
    profile.add_argument("--output", default="runs/profile", help="folder for the profile, measurements and predictor (default: %(default)s)")
    profile.add_argument("--format", choices=("json", "csv"), default="json", help="measurement file format (default: %(default)s)")
    profile.add_argument("--add-to-run-dir", action="store_true",
                         help="also add the device (profile, predictor, budgets) to the --run-dir, so a federation can use it")
    profile.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _run_pretrain(args: argparse.Namespace) -> int:
    from fl_server.pretrain import pretrain
    from fl_server.summary import format_pretrain_summary

    run = pretrain(args.output, _pretrain_config(args))
    print(format_pretrain_summary(run.report))
    print(f"\nRun directory: {run.path}")
    return 0


def _parse_overrides(items: Sequence[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ApfpError(f"--set {item!r} is invalid; use KEY=VALUE, for example --set num-rounds=2")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    return overrides


def check_simulation_inputs(run_dir: str | Path, overrides: dict[str, str]) -> None:
    """Fail before Flower starts when the run directory or a named plug-in is invalid.

    Starting a simulation costs tens of seconds, and errors raised inside the
    ServerApp reach the console only through Flower's log, so the checks that can
    run here do.
    """
    from fl_server.run_dir import RunDirectory
    from nas.search import get_strategy

    run = RunDirectory.load(run_dir)
    if "search-strategy" in overrides:
        get_strategy(overrides["search-strategy"])
    if "device-profiles" in overrides:
        unknown = [p for p in overrides["device-profiles"].split(",") if p.strip() and p.strip() not in run.profiles]
        if unknown:
            raise ApfpError(
                f"device-profiles {unknown} have no latency surrogate in {run_dir}; use one of "
                f"{sorted(run.profiles)} or add the device with `apfp-nas profile --add-to-run-dir {run_dir}`"
            )


def _run_simulate(args: argparse.Namespace) -> int:
    from fl_server.summary import format_recommendations
    from simulations.runner import simulate

    overrides = _parse_overrides(args.set)
    check_simulation_inputs(args.run_dir, overrides)
    report_path = simulate(
        args.scenario,
        run_dir=args.run_dir,
        output_dir=args.output,
        data_root=args.data_root,
        resume=args.resume,
        overrides=overrides,
    )
    report = json.loads(Path(report_path).read_text("utf-8"))
    print(format_recommendations(report))
    print(f"\nReport: {report_path}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from fl_server.pretrain import PretrainConfig, pretrain
    from fl_server.summary import format_pretrain_summary, format_recommendations
    from simulations.runner import simulate

    started = time.perf_counter()
    root = Path(args.output)
    print("Stage 1: pretraining the supernet and surrogates on the public half of digits")
    run = pretrain(root / "pretrain", PretrainConfig(seed=args.seed, progress=not args.no_progress))
    print(format_pretrain_summary(run.report))
    print("\nStage 2: federated search on the private half of digits (Flower simulation)")
    report_path = simulate(
        DEFAULT_SCENARIO, run_dir=run.path, output_dir=root / "federated", overrides={"seed": str(args.seed)}
    )
    report = json.loads(Path(report_path).read_text("utf-8"))
    print(format_recommendations(report))
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s. Report: {report_path}")
    return 0


def _add_profiled_device(run_dir: str | None, result: dict) -> None:
    from fl_server.run_dir import add_device
    from hw_profiles import load_profile
    from nas.space import SearchSpace
    from surrogate import LatencyPredictor

    if run_dir is None:
        raise ApfpError("--add-to-run-dir needs --run-dir: the run directory whose space was profiled")
    space = SearchSpace.from_json((Path(run_dir) / "space.json").read_text("utf-8"))
    profile = load_profile(result["profile_path"])
    predictor = LatencyPredictor.from_text(Path(result["predictor_path"]).read_text("utf-8"), space)
    run = add_device(run_dir, profile, predictor, result["rows"])
    print(f"Added device {profile.name!r} to {run.path} with budgets {run.budgets[profile.name]} ms")


def _run_profile(args: argparse.Namespace) -> int:
    from hw_profiles.device import profile_device

    if args.add_to_run_dir and args.run_dir is None:
        raise ApfpError("--add-to-run-dir needs --run-dir: the run directory whose space to profile")

    result = profile_device(
        profile=args.profile,
        name=args.name,
        budgets=[b.strip() for b in args.budgets.split(",") if b.strip()],
        run_dir=args.run_dir,
        num_samples=args.samples,
        output_dir=args.output,
        file_format=args.format,
        seed=args.seed,
        progress=not args.no_progress,
    )
    quality = result["quality"]
    if args.add_to_run_dir:
        _add_profiled_device(args.run_dir, result)
    print(f"Profile: {result['profile_path']}")
    print(f"Measurements ({result['num_samples']} architectures): {result['measurements_path']}")
    print(f"Latency predictor: {result['predictor_path']}")
    print(
        f"Held-out quality on {quality['held_out']} of {quality['num_samples']} architectures: LightGBM MAPE {quality['mape']:.1%}, within ±10% {quality['within_10pct']:.1%}; "
        f"FLOPs-linear baseline MAPE {quality['baseline_flops_linear']['mape']:.1%}, "
        f"within ±10% {quality['baseline_flops_linear']['within_10pct']:.1%}"
    )
    return 0


COMMANDS = {"pretrain": _run_pretrain, "simulate": _run_simulate, "demo": _run_demo, "profile": _run_profile}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``apfp-nas`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except (ApfpError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
