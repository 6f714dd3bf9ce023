"""Parts every benchmark shares: the command line, the result envelope and the JSON writer.

A benchmark module defines ``add_arguments(parser)`` and ``run(args) -> Outcome`` and
calls :func:`main`. The envelope written around its results records the command
line, the git commit, the machine (CPU model, cores, memory, load average), the
seeds, the torch thread count, and the wall and CPU seconds of the whole run. CPU
seconds are those of this process (all threads, ``time.process_time``) and of its
waited-for child processes (``resource.getrusage(RUSAGE_CHILDREN)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_CACHE_DIR = REPO_ROOT / "bench" / ".cache"
#: The MedMNIST folder beside the repository checkout, used when ``--data-root`` is not given.
SHARED_MEDMNIST_DIR = REPO_ROOT.parent / "shared" / "data" / "medmnist"
RESULT_FORMAT = 1
PACKAGES = ("torch", "numpy", "lightgbm", "onnxruntime", "flwr", "optuna", "scikit-learn")


@dataclass(frozen=True)
class Target:
    """One figure checked against its target: ``met`` is None when the figure could not be measured."""

    name: str
    goal: str
    value: Any
    met: bool | None
    note: str = ""


@dataclass
class Outcome:
    """Result of a benchmark's ``run``: its settings, its figures and the targets they meet."""

    settings: dict[str, Any]
    results: dict[str, Any]
    targets: list[Target] = field(default_factory=list)


# --------------------------------------------------------------------- machine
def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    """Return the machine's total memory in GiB from /proc/meminfo, or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Return the facts about this machine that a timing depends on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


def git_info() -> dict[str, Any]:
    """Return the commit of the checkout and whether tracked files differ from it (read-only git calls).

    Result files under ``bench/results`` do not count as changes: benchmarks write them.
    """
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------- timing
@dataclass
class Stopwatch:
    """Wall seconds and CPU seconds (this process, waited-for children) since :meth:`start`."""

    wall: float = 0.0
    cpu: float = 0.0
    children: float = 0.0

    def start(self) -> "Stopwatch":
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.children = usage.ru_utime + usage.ru_stime
        return self

    def elapsed(self) -> dict[str, float]:
        """Return ``wall_s``, ``cpu_self_s`` and ``cpu_children_s`` since :meth:`start`."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "wall_s": time.perf_counter() - self.wall,
            "cpu_self_s": time.process_time() - self.cpu,
            "cpu_children_s": usage.ru_utime + usage.ru_stime - self.children,
        }


# ------------------------------------------------------------------ statistics
def spread(values: Sequence[float]) -> dict[str, Any]:
    """Return median, min, max and count of the finite ``values`` (None fields when there are none)."""
    finite = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not finite:
        return {"median": None, "min": None, "max": None, "n": 0}
    middle = len(finite) // 2
    median = finite[middle] if len(finite) % 2 else 0.5 * (finite[middle - 1] + finite[middle])
    return {"median": median, "min": finite[0], "max": finite[-1], "n": len(finite)}


def percent(value: float | None) -> str:
    """Format a share (0.25) as a percentage ("25.0%"), or "n/a" for None."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


# ---------------------------------------------------------------- command line
def parse_seeds(text: str) -> list[int]:
    """Parse ``--seeds``: a comma list (``0,1,2``) or a count (``3`` means 0, 1, 2)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r} is invalid; give a count such as 3 or a list such as 0,1,2")
    if len(values) == 1 and "," not in str(text):
        values = list(range(values[0]))
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"--seeds {text!r} is invalid; give at least one seed >= 0")
    return values


def build_parser(name: str, description: str, default_seeds: int) -> argparse.ArgumentParser:
    """Return the parser with the options every benchmark has."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small settings that finish in minutes; the result goes to <name>-quick.json")
    parser.add_argument("--seeds", type=parse_seeds, default=None,
                        help=f"seeds: a count or a comma list (default: {default_seeds}, quick: 1)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON result file (default: bench/results/<name>[-quick].json)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads of this process (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help="folder for cached stage-1 runs and evaluation pools (default: bench/.cache)")
    parser.add_argument("--verbose", action="store_true", help="log debug messages")
    return parser


def default_output(name: str, quick: bool) -> Path:
    return RESULTS_DIR / f"{name}{'-quick' if quick else ''}.json"


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=_json_default, allow_nan=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def finite_or_none(value: Any) -> Any:
    """Return ``value`` with every NaN or infinity (nested in dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return finite_or_none(value.item())
    return value


def main(
    name: str,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], Outcome],
    argv: Sequence[str] | None = None,
    *,
    default_seeds: int = 3,
) -> Path:
    """Parse ``argv``, run the benchmark, write its envelope and return the JSON path."""
    parser = build_parser(name, description, default_seeds)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else list(range(default_seeds))
    if args.threads < 1:
        parser.error(f"--threads {args.threads} is invalid; use 1 or more")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("onnxruntime", "lightgbm"):  # per-model quantization and fitting chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    args.cache_dir = Path(args.cache_dir).resolve()
    command = ["python", "-m", f"bench.{name}", *(sys.argv[1:] if argv is None else list(argv))]
    started_at = datetime.datetime.now(datetime.timezone.utc)
    load_before = load_average()
    git_at_start = git_info()
    watch = Stopwatch().start()
    outcome = run(args)
    timing = watch.elapsed()
    envelope = {
        "format": RESULT_FORMAT,
        "benchmark": name,
        "quick": bool(args.quick),
        "command": shlex.join(command),
        "git": git_at_start,
        "git_at_end": git_info(),
        "machine": machine_info(),
        "load_average": {"start": load_before, "end": load_average()},
        "torch_threads": args.threads,
        "seeds": list(args.seeds),
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **timing,
        "settings": outcome.settings,
        "results": outcome.results,
        "targets": [dataclasses.asdict(t) for t in outcome.targets],
    }
    path = write_json(args.output or default_output(name, args.quick), finite_or_none(envelope))
    for target in outcome.targets:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target.met]
        logger.info("%s: %s (target %s) %s", target.name, _short(target.value), target.goal, verdict)
    logger.info("%s finished in %.0f s; result: %s", name, timing["wall_s"], path)
    return path


def run_cli(entry: Callable[[], Any]) -> None:
    """Run a benchmark's ``main`` as a command: a bad setting or a missing file exits 2 with its message."""
    from nas.errors import ApfpError

    try:
        entry()
    except (ApfpError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
