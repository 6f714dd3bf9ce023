"""The stage-2 report: ``report.json`` with documented fields, and its plots.

:func:`write_report` receives the strategy's JSON-ready history and writes
``report.json`` (the history plus a summary and a ``fields`` section that documents
every key) and PNG plots under ``plots/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fl_server.plots import plt
from fl_server.run_dir import atomic_write_text
from nas.search.pareto import pareto_front_mask

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"

FIELDS = {
    "status": "completed, or stopped (stop-after-round reached; continue with resume)",
    "settings": "the run-config settings of this run",
    "budgets_ms": "latency budgets per device profile, in milliseconds",
    "clients": "nodes from the query round: node id, partition, device profile, private split sizes (samples)",
    "rounds[].round": "round number, from 1",
    "rounds[].accepted / rejected": "candidate reports accepted and rejected by validation",
    "rounds[].rejections": "each rejected report: node id, partition, candidate id and the reason",
    "rounds[].observations": "aggregated observations per (device, architecture): accuracy on the clients' "
    "validation splits (0..1), latency_ms measured on the device, the surrogates' predictions before "
    "this round's correction, weight (validation samples) and the number of clients",
    "rounds[].surrogate_quality": "before/after correction on this round's observations: accuracy Kendall tau "
    "and mean absolute error; latency MAPE and share within ±10% per device",
    "rounds[].bytes_sent / bytes_received": "payload bytes of the round's messages (arrays plus config text)",
    "rounds[].timings_s": "server-side seconds per phase; client_time_s: client seconds training and measuring",
    "recommendations[]": "one row per (device, budget): arch, source (observed or surrogate), predicted_accuracy, "
    "observed_accuracy (validation), measured_accuracy (clients' test splits, sample-weighted), "
    "predicted_latency_ms, measured_latency_ms (median on the device), meets_budget (measured latency <= "
    "budget x (1 + tolerance)), tolerance, onnx (file relative to the output folder)",
    "recommendations[].privacy_audit": "loss-threshold membership-inference attack run by each client that "
    "evaluated the recommendation (members: its train split, non-members: its test split): ROC AUC of the model "
    "as released by the server and of the client's fine-tuned copy, per client and the maximum; 0.5 means the "
    "losses reveal nothing about membership, 1.0 that they reveal it completely",
    "rounds[].rejection_counts": "rejections per kind: client-error, no-reply, malformed, non-finite, "
    "out-of-range, unknown-candidate, duplicate-reply, missing-field, missing-candidate, wrong-device, weights",
    "rounds[].nodes": "nodes sent a message this round and nodes with at least one accepted report",
    "rounds[].update": "applied, or skipped when fewer than min-train-nodes nodes had an accepted report "
    "(the observations stay in the record; surrogates, search and weights keep their state)",
    "rounds[].outliers": "observations left out of the surrogate corrections by the outlier screen, with the rule",
    "rounds[].dp": "weights mode with DP: clients sampled and merged, noise standard deviation, update L2 norms "
    "before clipping, number clipped",
    "faults": "failure injection of this run: failure-rate and failure-modes",
    "privacy": "privacy mode; with DP the clipping norm, noise multiplier, delta, releases and epsilon",
    "final_evaluation": "the evaluate round that scored the recommendations on the clients' test splits",
    "summary": "counts over the recommendations: how many meet their budget, mean test accuracy; client failures "
    "(client-error and no-reply rejections), skipped rounds, and the largest membership-inference AUC",
}


def summarize(history: Mapping[str, Any]) -> dict[str, Any]:
    """Return headline figures of a run: budgets met, test accuracy, rejected reports, bytes."""
    rows = history.get("recommendations", [])
    measured = [r for r in rows if r.get("measured_latency_ms") is not None]
    met = [r for r in measured if r.get("meets_budget")]
    accuracies = [r["measured_accuracy"] for r in rows if r.get("measured_accuracy") is not None]
    rounds = history.get("rounds", [])
    return {
        "num_recommendations": len(rows),
        "num_measured": len(measured),
        "num_meeting_budget": len(met),
        "share_meeting_budget": (len(met) / len(measured)) if measured else None,
        "mean_test_accuracy": float(np.mean(accuracies)) if accuracies else None,
        "reports_accepted": int(sum(r.get("accepted", 0) for r in rounds)),
        "reports_rejected": int(sum(r.get("rejected", 0) for r in rounds)),
        "bytes_sent": int(sum(r.get("bytes_sent", 0) for r in rounds)),
        "bytes_received": int(sum(r.get("bytes_received", 0) for r in rounds)),
        "client_failures": int(sum(n for r in rounds for kind, n in r.get("rejection_counts", {}).items()
                                   if kind in ("client-error", "no-reply"))),
        "rounds_skipped": sum(1 for r in rounds if r.get("update") == "skipped"),
        "max_mia_auc": {
            name: max((a["auc_max"] for row in rows if (audit := row.get("privacy_audit"))
                       and (a := audit.get(name))), default=None)
            for name in ("released", "finetuned")
        },
    }


def write_report(history: Mapping[str, Any], output_dir: str | Path) -> Path:
    """Write ``report.json`` and the plots for ``history``; return the report path."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report = dict(history)
    report["summary"] = summarize(history)
    report["fields"] = FIELDS
    try:
        report["plots"] = [str(p.relative_to(output)) for p in plot_federated(history, output / "plots")]
    except (ValueError, KeyError, TypeError) as error:  # a plot must never lose the report
        log.warning("Could not draw the stage-2 plots: %s", error)
        report["plots"] = []
    path = output / REPORT_FILE
    atomic_write_text(path, json.dumps(report, indent=1, sort_keys=True))
    return path


def _observations(history: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [obs for r in history.get("rounds", []) for obs in r.get("observations", [])]


def plot_federated(history: Mapping[str, Any], folder: Path) -> list[Path]:
    """Draw the Pareto front per device, predicted vs observed, and the round history."""
    folder.mkdir(parents=True, exist_ok=True)
    return [_plot_pareto(history, folder), _plot_predictions(history, folder), _plot_rounds(history, folder)]


def _plot_pareto(history: Mapping[str, Any], folder: Path) -> Path:
    observations = _observations(history)
    # A profile of the run directory that no client used has nothing to draw.
    used = {o["device"] for o in observations} | {r["device"] for r in history.get("recommendations", [])}
    devices = sorted(d for d in history.get("budgets_ms", {}) if d in used)
    figure, axes = plt.subplots(1, max(1, len(devices)), figsize=(4.5 * max(1, len(devices)), 3.6), squeeze=False)
    for axis, device in zip(axes[0], devices):
        points = [o for o in observations if o["device"] == device]
        latency = np.array([o["latency_ms"] for o in points], dtype=float)
        accuracy = np.array([o["accuracy"] for o in points], dtype=float)
        if len(points):
            axis.scatter(latency, accuracy, s=12, color="tab:blue", label="observed")
            mask = pareto_front_mask(accuracy, latency)
            order = np.argsort(latency[mask])
            axis.step(latency[mask][order], accuracy[mask][order], where="post", color="tab:orange", label="Pareto front")
        for budget in history["budgets_ms"][device]:
            axis.axvline(budget, color="grey", linestyle=":", linewidth=1)
        recs = [r for r in history.get("recommendations", []) if r["device"] == device and r.get("measured_latency_ms")]
        if recs:
            axis.scatter(
                [r["measured_latency_ms"] for r in recs],
                [r.get("measured_accuracy") or 0.0 for r in recs],
                marker="*", s=80, color="tab:red", label="recommended (test)",
            )
        axis.set_title(device, fontsize=9)
        axis.set_xlabel("latency (ms)")
        axis.set_ylabel("accuracy")
        axis.legend(fontsize=7)
    figure.tight_layout()
    path = folder / "pareto.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _plot_predictions(history: Mapping[str, Any], folder: Path) -> Path:
    rounds = history.get("rounds", [])
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    observations = _observations(history)
    observed = [o["accuracy"] for o in observations if o.get("pred_accuracy") is not None]
    predicted = [o["pred_accuracy"] for o in observations if o.get("pred_accuracy") is not None]
    axes[0].scatter(observed, predicted, s=12)
    if observed:
        low, high = min(observed + predicted), max(observed + predicted)
        axes[0].plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    axes[0].set_xlabel("observed accuracy (clients)")
    axes[0].set_ylabel("predicted before correction")
    axes[0].set_title("accuracy surrogate on client reports", fontsize=9)
    numbers = [r["round"] for r in rounds]
    for phase, style in (("before", "--"), ("after", "-")):
        taus = [r["surrogate_quality"][phase]["accuracy"].get("kendall_tau") for r in rounds]
        axes[1].plot(numbers, [np.nan if t is None else t for t in taus], style, marker="o", label=f"Kendall tau {phase}")
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("Kendall tau on the round's reports")
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    path = folder / "predicted_vs_observed.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _plot_rounds(history: Mapping[str, Any], folder: Path) -> Path:
    rounds = history.get("rounds", [])
    numbers = [r["round"] for r in rounds]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].bar(numbers, [r.get("accepted", 0) for r in rounds], label="accepted")
    axes[0].bar(numbers, [r.get("rejected", 0) for r in rounds], bottom=[r.get("accepted", 0) for r in rounds], label="rejected")
    axes[0].set_title("reports per round", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].plot(numbers, [r.get("bytes_sent", 0) / 1e6 for r in rounds], marker="o", label="sent")
    axes[1].plot(numbers, [r.get("bytes_received", 0) / 1e6 for r in rounds], marker="o", label="received")
    axes[1].set_title("payload (MB)", fontsize=9)
    axes[1].legend(fontsize=7)
    axes[2].plot(numbers, [r.get("timings_s", {}).get("total", 0.0) for r in rounds], marker="o", label="round total")
    axes[2].plot(numbers, [r.get("client_time_s", {}).get("train", 0.0) for r in rounds], marker="o", label="client training")
    axes[2].set_title("seconds", fontsize=9)
    axes[2].legend(fontsize=7)
    for axis in axes:
        axis.set_xlabel("round")
    figure.tight_layout()
    path = folder / "rounds.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
