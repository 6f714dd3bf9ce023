"""Plain-text tables for the console: stage-1 summary and the recommendation table."""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return ``rows`` as a fixed-width text table with ``headers``."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_pretrain_summary(report: Mapping[str, Any]) -> str:
    """Return the stage-1 summary: surrogate quality and the best architecture per budget."""
    accuracy = report["surrogates"]["accuracy"]
    lines = [
        f"Accuracy surrogate: held-out Kendall tau {accuracy['kendall_tau']:.3f} "
        f"on {accuracy['held_out']} of {accuracy['num_samples']} subnets",
    ]
    rows = []
    for profile, quality in sorted(report["surrogates"]["latency"].items()):
        baseline = quality["baseline_flops_linear"]
        rows.append([profile, quality["within_10pct"], quality["mape"], baseline["within_10pct"], baseline["mape"]])
    lines.append(format_table(["profile", "LightGBM ±10%", "LightGBM MAPE", "FLOPs ±10%", "FLOPs MAPE"], rows))
    best = [
        [r["profile"], r["budget_ms"], r["predicted_accuracy"], r["predicted_latency_ms"]]
        for r in report.get("best_by_surrogate", [])
    ]
    lines.append(format_table(["profile", "budget ms", "pred. accuracy", "pred. latency ms"], best))
    timings = report.get("timings_s", {})
    if timings:
        lines.append("Timings: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return "\n\n".join(lines)


def format_recommendations(report: Mapping[str, Any]) -> str:
    """Return the stage-2 recommendation table, one row per (device, budget), with a legend."""
    rows = []
    for rec in report.get("recommendations", []):
        rows.append(
            [
                rec["device"],
                rec["budget_ms"],
                rec.get("predicted_accuracy"),
                rec.get("measured_accuracy"),
                rec.get("num_test_samples"),
                rec.get("predicted_latency_ms"),
                rec.get("measured_latency_ms"),
                rec.get("meets_budget"),
                rec.get("source"),
                rec.get("onnx"),
            ]
        )
    headers = ["device", "budget ms", "pred. acc", "test acc", "test n", "pred. ms", "measured ms", "meets", "source",
               "onnx"]
    legend = (
        "test acc: the clients' fine-tuned copies on their test splits, pooled over test n images (a binomial\n"
        "  standard error of about sqrt(acc * (1 - acc) / n)); measured ms: median over the device's clients;\n"
        "  meets: measured ms within the budget plus the profile's tolerance; source: observed (chosen from\n"
        "  measured results) or surrogate (predicted only); onnx: path relative to the report's folder."
    )
    return "Recommendations\n" + format_table(headers, rows) + "\n" + legend
