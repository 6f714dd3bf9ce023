"""Find, check and merge the benchmark result files that ``python -m bench.report`` renders.

Each benchmark ``NAME`` in :data:`NAMES` can have, in the results folder:

- ``NAME.json``: the full run written by default;
- ``NAME-<suffix>.json``: further runs saved with ``--output``, typically one per
  dataset (``search_quality-retinamnist.json``);
- ``NAME-quick.json``: the ``--quick`` run written by default.

:func:`load_latest` reads and checks every one of these files once, picks which
runs to show, and merges them with :func:`merge_parts`. A file that cannot be
rendered raises :class:`ResultFileError`, which names the file and the fix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from nas.errors import ApfpError

logger = logging.getLogger(__name__)

NAMES = ("search_quality", "accuracy_surrogate", "latency_surrogate", "cost", "federation", "scale")

# The keys the report reads: of the envelope, of ``machine``, of each target and of ``results``.
ENVELOPE_KEYS = ("benchmark", "quick", "command", "git", "machine", "torch_threads", "seeds", "wall_s",
                 "finished_at", "results", "targets")
MACHINE_KEYS = ("cpu_model", "usable_cores", "memory_gib")
TARGET_KEYS = ("name", "goal", "value", "met", "note")
RESULTS_KEYS = {
    "search_quality": ("datasets",),
    "accuracy_surrogate": ("datasets",),
    "latency_surrogate": ("spaces",),
    "cost": ("stage1", "stage2", "two_stage_cpu_s", "scratch", "candidates", "scratch_cpu_estimate_s", "ratio",
             "ratio_is_lower_bound", "target_accuracy", "budgets"),
    "federation": ("rounds", "time", "bytes", "budgets"),
    "scale": ("by_size",),
}


class ResultFileError(ApfpError, ValueError):
    """A results folder or result file that the report cannot use; the message names it and the fix."""


def read_result(path: Path, name: str) -> dict[str, Any]:
    """Read the result file ``path`` of benchmark ``name`` and check the keys the report reads.

    Raises :class:`ResultFileError` for unreadable text, invalid JSON, missing keys,
    or a file that contains another benchmark's result.
    """
    fix = "rerun the benchmark or delete the file"
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultFileError(f"cannot read result file {path} ({error}); {fix}") from error
    if not text.strip():
        raise ResultFileError(f"result file {path} is empty; {fix}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultFileError(f"result file {path} is not valid JSON ({error}); {fix}") from error
    if not isinstance(data, dict):
        raise ResultFileError(f"result file {path} contains a JSON {type(data).__name__}, not an object; {fix}")
    missing = [key for key in ENVELOPE_KEYS if key not in data]
    if not missing:
        missing += _missing(data["machine"], MACHINE_KEYS, "machine")
        missing += _missing(data["results"], RESULTS_KEYS[name], "results")
        if isinstance(data["targets"], list):
            for index, target in enumerate(data["targets"]):
                missing += _missing(target, TARGET_KEYS, f"targets[{index}]")
        else:
            missing.append("targets (a list)")
    if missing:
        raise ResultFileError(f"result file {path} is missing keys {missing}; {fix}")
    if data["benchmark"] != name:
        raise ResultFileError(f"result file {path} contains a result of benchmark {data['benchmark']!r}, not {name!r}; "
                              f"rename or delete the file")
    if not isinstance(data["quick"], bool) or not isinstance(data["git"], dict):
        raise ResultFileError(f"result file {path} has an invalid 'quick' (expected true or false) or 'git' "
                              f"(expected an object) entry; {fix}")
    return data


def _missing(value: Any, keys: Sequence[str], where: str) -> list[str]:
    """Return ``where.key`` for each of ``keys`` that the dictionary ``value`` lacks (all of them if no dictionary)."""
    if not isinstance(value, dict):
        return [f"{where} (an object)"]
    return [f"{where}.{key}" for key in keys if key not in value]


def load_latest(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Return the result to show per benchmark, merged with :func:`merge_parts`.

    Every result file of a benchmark is read and checked. Full runs (``"quick":
    false``) from ``NAME.json`` and ``NAME-<suffix>.json`` are shown together; without
    any, the quick runs saved under those names; without any, ``NAME-quick.json``.
    The files not shown are named in one warning. Benchmarks without files are left
    out of the returned dictionary.

    Raises :class:`ResultFileError` when ``results_dir`` is not a folder, when a file
    fails :func:`read_result`, or when two shown files contain the same dataset.
    """
    if not results_dir.is_dir():
        raise ResultFileError(f"results folder {results_dir} does not exist")
    found, not_shown = {}, []
    for name in NAMES:
        full, quick = results_dir / f"{name}.json", results_dir / f"{name}-quick.json"
        paths = ([full] if full.is_file() else []) + sorted(
            p for p in results_dir.glob(f"{name}-*.json") if p != quick and p.is_file())
        runs = [(path, read_result(path, name)) for path in paths]
        quick_runs = [(quick, read_result(quick, name))] if quick.is_file() else []
        full_runs = [run for run in runs if not run[1]["quick"]]
        quick_parts = [run for run in runs if run[1]["quick"]]
        selected = full_runs or quick_parts or quick_runs
        selected_paths = {path for path, _ in selected}
        not_shown += [path.name for path, _ in runs + quick_runs if path not in selected_paths]
        if selected:
            _check_distinct_datasets(selected)
            found[name] = merge_parts([data for _, data in selected])
    if not_shown:
        logger.warning("quick result files in %s not shown, because full runs of the same benchmark (or, without "
                       "them, quick runs saved with --output) take precedence: %s", results_dir, ", ".join(not_shown))
    return found


def _check_distinct_datasets(runs: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    """Raise :class:`ResultFileError` when two runs contain results of the same dataset.

    The datasets of a run are the keys of ``results.datasets`` where it has them,
    else its ``settings.dataset`` (possibly none).
    """
    seen: dict[Any, Path] = {}
    for path, data in runs:
        settings = data.get("settings")
        datasets = data["results"].get("datasets")
        keys = list(datasets) if isinstance(datasets, dict) else [
            settings.get("dataset") if isinstance(settings, dict) else None]
        for key in keys:
            if key in seen:
                duplicate = f"dataset {key!r}" if key is not None else "a result without a dataset (settings.dataset)"
                raise ResultFileError(f"{seen[key]} and {path} both contain {duplicate}; keep one of them "
                                      f"(delete or move the other) and rerun the report")
            seen[key] = path


def merge_parts(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge one or several results of one benchmark, typically one per dataset.

    Results with per-dataset sections (``results.datasets``) are joined into one
    result. Others keep one section each, and their target names get the dataset
    (``settings.dataset``) as a prefix. ``parts`` keeps every run's own record for
    its provenance line. Each merged target carries its run's ``quick`` flag; the
    merged ``quick`` is true when any part is quick.
    """
    merged = {**parts[0], "quick": any(part["quick"] for part in parts), "parts": list(parts), "targets": []}
    if all("datasets" in part["results"] for part in parts):
        merged["results"] = {"datasets": {}}
        for part in parts:
            merged["results"]["datasets"].update(part["results"]["datasets"])
            merged["targets"] += [{**t, "quick": part["quick"]} for t in part["targets"]]
        return merged
    for part in parts:
        prefix = part.get("settings", {}).get("dataset")
        merged["targets"] += [{**t, "name": f"{prefix}: {t['name']}" if prefix else t["name"], "quick": part["quick"]}
                              for t in part["targets"]]
    return merged


def sections_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the results to render one section each: the parts of an unjoined merge, else ``result``."""
    if "parts" in result and "datasets" not in result["results"]:
        return result["parts"]
    return [result]
