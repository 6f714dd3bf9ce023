"""The end of a federated search: recommendations per (device, budget), ONNX files, final scores.

:func:`recommend_all` calls :func:`nas.search.recommend` for every (device, budget)
separately, so a budget that the corrected latency surrogate now finds infeasible
is reported as such instead of failing the whole table. :func:`export_models`
writes each recommended subnet (the server's supernet weights, BatchNorm
recalibrated on the public data when it can be loaded) to
``<output-dir>/onnx/<device>_<budget>ms.onnx``. :func:`merge_final_scores` joins
the clients' test-split scores into the table: test accuracy pooled over clients
(weighted by test samples), latency as the median over the device's clients, and
whether it meets the budget within the profile's tolerance. It also adds the privacy
audit, the membership-inference AUC each client measured (:mod:`fl_client.privacy_audit`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hw_profiles import HardwareProfile
from nas.data import ArraySplit, load_dataset
from nas.data.holdout import split_public_private
from nas.errors import ApfpError, SearchError
from nas.export import export_onnx
from nas.finetune import recalibrate_bn
from nas.search import Objective, Observation
from nas.search.recommend import DEFAULT_LATENCY_MARGIN, recommend
from nas.space import Architecture, SearchSpace
from nas.supernet import ElasticSupernet
from fl_server.validation import ClientResult

logger = logging.getLogger(__name__)


def recommend_all(
    space: SearchSpace,
    budgets: Mapping[str, Sequence[float]],
    observations: Sequence[Observation],
    objective_factory: Callable[[str, float], Objective],
    latency_margin: float = DEFAULT_LATENCY_MARGIN,
) -> list[dict[str, Any]]:
    """Return one table row per (device, budget); infeasible budgets get ``source`` "infeasible".

    ``latency_margin`` is the safety margin of :func:`nas.search.recommend.recommend`.
    """
    rows = []
    for device, device_budgets in budgets.items():
        for budget in sorted(float(b) for b in device_budgets):
            try:
                (choice,) = recommend(space, {device: [budget]}, observations, objective_factory,
                                      latency_margin=latency_margin)
            except SearchError as error:
                logger.warning("no recommendation for %s at %g ms: %s", device, budget, error)
                rows.append({"device": device, "budget_ms": budget, "arch": None, "source": "infeasible",
                             "error": str(error)})
                continue
            rows.append({
                "device": device, "budget_ms": budget, "arch": choice.arch.to_dict(), "arch_text": str(choice.arch),
                "encoding": space.encode(choice.arch), "source": choice.source,
                "predicted_accuracy": choice.predicted_accuracy, "predicted_latency_ms": choice.predicted_latency_ms,
                "observed_accuracy": choice.observed_accuracy, "observed_latency_ms": choice.observed_latency_ms,
            })
    return rows


def calibration_split(settings: Mapping[str, Any], resolution: int) -> ArraySplit | None:
    """Return the public train split of the run directory's dataset, or None if it cannot be loaded."""
    try:
        seed = int(settings.get("seed", 0))
        splits = load_dataset(str(settings["dataset"]), root=settings.get("data_root") or None, seed=seed)
        fraction = float(settings.get("private_fraction", 0.0))
        if fraction > 0:
            splits = split_public_private(splits, "public", private_fraction=fraction, seed=seed)
        return splits.resized(resolution).train
    except (ApfpError, KeyError, OSError) as error:
        logger.warning("public data for BatchNorm recalibration is unavailable (%s); ONNX files keep the "
                       "supernet's statistics", error)
        return None


def export_models(
    rows: Sequence[dict[str, Any]],
    supernet: ElasticSupernet,
    output_dir: Path,
    calibration: ArraySplit | None,
    bn_batches: int = 4,
) -> None:
    """Export every recommended architecture to ONNX and store the relative path in ``row["onnx"]``.

    Each distinct architecture is exported once, and rows that share it get their own
    file with the same bytes.

    NOTE: the files contain the server's supernet weights. The measured test accuracy in
    the table comes from each client's locally fine-tuned copy, which stays on the
    client in the ``metrics`` privacy mode, so a file scores lower until fine-tuned.
    """
    space = supernet.space
    folder = output_dir / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    exported: dict[Architecture, bytes] = {}
    for row in rows:
        if row.get("arch") is None:
            row["onnx"] = None
            continue
        arch = Architecture.from_dict(row["arch"])
        if arch not in exported:
            model = supernet.extract_subnet(arch)
            if calibration is not None:
                recalibrate_bn(model, calibration, num_batches=bn_batches, seed=0)
            exported[arch] = export_onnx(model, input_shape=(space.in_channels, space.resolution, space.resolution))
        name = f"{row['device']}_{row['budget_ms']:.4g}ms.onnx"
        (folder / name).write_bytes(exported[arch])
        row["onnx"] = f"onnx/{name}"


def merge_final_scores(
    rows: Sequence[dict[str, Any]], results: Sequence[ClientResult], profiles: Mapping[str, HardwareProfile]
) -> None:
    """Add the final test-split scores and the budget check to every row, in place."""
    for row in rows:
        matching = [
            r for r in results
            if row.get("arch") is not None and r.device == row["device"] and r.arch.to_dict() == row["arch"]
        ]
        profile = profiles[row["device"]]
        row["tolerance"] = profile.tolerance
        row["num_clients"] = len(matching)
        if not matching:
            row.update(measured_accuracy=None, measured_latency_ms=None, num_test_samples=0, meets_budget=None,
                       privacy_audit=None)
            continue
        samples = np.array([r.report.num_eval for r in matching], dtype=np.float64)
        accuracy = float(np.average([r.report.accuracy for r in matching], weights=samples))
        latency = float(np.median([r.report.latency_ms for r in matching]))
        row.update(
            measured_accuracy=accuracy, measured_latency_ms=latency, num_test_samples=int(samples.sum()),
            measured_latency_p90_ms=float(np.median([r.report.latency_p90_ms for r in matching])),
            latency_stable=all(r.report.latency_stable == 1.0 for r in matching),
            meets_budget=bool(profile.meets_budget(latency, row["budget_ms"])),
            privacy_audit=privacy_audit(matching),
        )


def privacy_audit(results: Sequence[ClientResult]) -> dict[str, Any] | None:
    """Summarize the clients' membership-inference AUCs of one recommendation, or None if none sent one.

    ``released`` is the model as the server released it, ``finetuned`` the client's
    fine-tuned copy. Each has the per-client AUCs and their maximum, the worst case.
    """
    summary: dict[str, Any] = {"attack": "loss threshold", "members": "client train split",
                               "non_members": "client test split"}
    for name, field in (("released", "mia_auc"), ("finetuned", "mia_auc_finetuned")):
        scores = [(r.partition, getattr(r.report, field)) for r in results if getattr(r.report, field) is not None]
        summary[name] = None if not scores else {
            "auc_max": max(a for _, a in scores), "auc_mean": float(np.mean([a for _, a in scores])),
            "per_client": [{"partition": p, "auc": a} for p, a in scores],
        }
    if summary["released"] is None and summary["finetuned"] is None:
        return None
    return summary
