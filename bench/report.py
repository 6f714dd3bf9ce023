"""Render the latest benchmark results as the Markdown tables of ``docs/benchmarks.md``.

For every benchmark the full runs (``bench/results/<name>.json`` and
``<name>-<dataset>.json``) are shown when they exist, else the quick ones, and each
table names which one it shows; :mod:`bench.results_io` picks, checks and merges
the files.
``python -m bench.report`` prints the tables; ``--write docs/benchmarks.md``
replaces the part of that file between the generated-section markers and draws
the accuracy-surrogate curve to ``bench/results/accuracy_surrogate.png``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.common import RESULTS_DIR, percent as pct
# NAMES, merge_parts and ResultFileError are re-exported for callers of this module.
from bench.results_io import NAMES, ResultFileError, load_latest, merge_parts, sections_of  # noqa: F401

logger = logging.getLogger(__name__)

BEGIN, END = "<!-- BEGIN GENERATED: python -m bench.report --write docs/benchmarks.md -->", "<!-- END GENERATED -->"


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def spread_text(s: dict[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    text = f"{s['median'] * scale:.{digits}f}"
    if s.get("n", 0) > 1:
        text += f" [{s['min'] * scale:.{digits}f}, {s['max'] * scale:.{digits}f}]"
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(result: dict[str, Any]) -> str:
    if "parts" in result:
        return "\n\n".join(provenance(part) for part in result["parts"])
    machine, git = result["machine"], result["git"]
    kind = "quick run (small settings)" if result["quick"] else "full run"
    load = result.get("load_average", {})
    return (f"_{kind}: `{result['command']}`; commit {str(git.get('commit'))[:10]}"
            f"{' (uncommitted changes)' if git.get('dirty') else ''}{_changed(result)}; {machine['cpu_model']}, "
            f"{machine['usable_cores']} cores, {machine['memory_gib']} GiB; torch threads {result['torch_threads']}; "
            f"seeds {result['seeds']}; {result['wall_s']:.0f} s wall; load average at start "
            f"{(load.get('start') or ['?'])[0]}; {result['finished_at']}._")


def _changed(result: dict[str, Any]) -> str:
    end = result.get("git_at_end")
    if not end or end.get("commit") == result["git"].get("commit"):
        return ""
    return f" (the checkout was at {str(end.get('commit'))[:10]} when the run ended)"


def search_quality(result: dict[str, Any]) -> str:
    parts = []
    for key, data in result["results"]["datasets"].items():
        strategies = data["summary"]["strategies"]
        per_device = ", ".join(f"{d} {n}" for d, n in data["evaluations_per_device"].items())
        parts.append(f"**{key}**: {data['pool']['size']}-subnet oracle pool, {data['rounds']} round(s), "
                     f"client evaluations per device: {per_device}; oracle mean "
                     f"{fmt(data['summary']['oracle_mean_accuracy'])}.")
        parts.append(table(
            ["strategy", "mean true accuracy, median [min, max] over seeds", "gap to oracle", "meets budget",
             "meets budget with tolerance"],
            [[name, spread_text(s["mean_true_accuracy"]), spread_text(s["gap_to_oracle"]), pct(s["budget_met_share"]),
              pct(s["budget_met_share_with_tolerance"])] for name, s in strategies.items()]))
        names = list(strategies)
        rows = []
        for index, target in enumerate(next(iter(strategies.values()))["per_target"]):
            rows.append([target["device"], f"{target['budget_ms']:.4g}", fmt(target["oracle"])]
                        + [spread_text(strategies[n]["per_target"][index]) for n in names])
        parts.append(table(["device", "budget ms", "oracle"] + names, rows))
    return "\n\n".join(parts)


def accuracy_surrogate(result: dict[str, Any]) -> str:
    parts = []
    for key, data in result["results"]["datasets"].items():
        public, private = data["public"], data["private"]
        parts.append(f"**{key}**, public ({public['num_samples']} stage-1 subnets, 20% held out per seed):")
        parts.append(table(["predictor", "Kendall tau", "mean regret within budget"], [
            ["LightGBM surrogate", spread_text(public["kendall_tau"]), spread_text(public["mean_regret"])],
            ["MACs proxy (baseline)", spread_text(public["macs_proxy_kendall_tau"]),
             spread_text(public["macs_proxy_mean_regret"])]]))
        parts.append(f"**{key}**, private ({private['pool']}-subnet pool; uncorrected tau "
                     f"{spread_text(private['uncorrected_tau'])}, regret {spread_text(private['uncorrected_regret'])}; "
                     f"noise reference tau {spread_text(private['noise_reference_tau'])}):")
        parts.append(table(["client reports", "corrected tau", "corrected regret", "private-only tau (baseline)",
                            "private-only regret"],
                           [[c["reports"], spread_text(c["corrected_tau"]), spread_text(c["corrected_regret"]),
                             spread_text(c["private_only_tau"]), spread_text(c["private_only_regret"])]
                            for c in private["curve"]]))
    return "\n\n".join(parts)


def latency_surrogate(result: dict[str, Any]) -> str:
    rows = []
    for key, data in result["results"]["spaces"].items():
        shape = "x".join(str(v) for v in data["input_shape"])
        for profile, p in data["profiles"].items():
            noise = p.get("noise_reference") or {}
            rows.append([f"{key} ({shape})", profile, pct(p["predictor"]["within_10pct"]), pct(p["predictor"]["mape"]),
                         pct(p["flops_baseline"]["within_10pct"]), pct(p["flops_baseline"]["mape"]),
                         pct(noise.get("within_10pct")), p["held_out_predictions"]])
    return table(["space", "profile", "LightGBM within ±10%", "LightGBM MAPE", "FLOPs-linear within ±10%",
                  "FLOPs-linear MAPE", "re-measurement within ±10%", "held-out predictions"], rows)


def cost(result: dict[str, Any]) -> str:
    r = result["results"]
    rows = [["stage 1 (pretrain, in process)", fmt(r["stage1"]["cpu_total_s"], 0), fmt(r["stage1"]["wall_s"], 0)],
            ["stage 2 (Flower simulation, all processes)", fmt(r["stage2"]["cpu_total_s"], 0),
             fmt(r["stage2"]["wall_s"], 0)],
            ["two-stage total", fmt(r["two_stage_cpu_s"], 0), ""],
            [f"from scratch: {len(r['scratch'])} trained, x {r['candidates']} candidates (estimate)",
             fmt(r["scratch_cpu_estimate_s"], 0), ""]]
    scratch = "; ".join(f"{s['epochs']} epochs, {s['cpu_s']:.0f} CPU s, final accuracy {s['accuracy_by_epoch'][-1]:.3f}"
                        f"{'' if s['reached'] else ' (not reached)'}" for s in r["scratch"])
    return (table(["run", "CPU s", "wall s"], rows)
            + f"\n\nRatio (from scratch / two-stage): **{r['ratio']:.1f}x**"
            + (" (lower bound)" if r["ratio_is_lower_bound"] else "")
            + f". Target accuracy {r['target_accuracy']:.3f} (median recommendation test accuracy minus the margin). "
            + f"From-scratch runs: {scratch}.")


def budgets(results: dict[str, dict[str, Any]]) -> str:
    def label(name: str, result: dict[str, Any]) -> str:
        return f"{name} (quick)" if result["quick"] else name

    rows = []
    if "search_quality" in results:
        search_label = label("search_quality", results["search_quality"])
        for key, data in results["search_quality"]["results"]["datasets"].items():
            for name, s in data["summary"]["strategies"].items():
                rows.append([f"{search_label} {key}: {name}", pct(s["budget_met_share"]),
                             pct(s["budget_met_share_with_tolerance"])])
    for name in ("cost", "federation"):
        for part in sections_of(results[name]) if name in results else []:
            b = part["results"]["budgets"]
            dataset = part.get("settings", {}).get("dataset", "")
            rows.append([f"{label(name, part)} {dataset}: stage 2 through Flower ({b['measured']} measured)",
                         pct(b["met_share"]), pct(b["met_share_with_tolerance"])])
    return table(["run", "meets budget (measured latency <= budget)", "within the profile tolerance"], rows)


def federation(result: dict[str, Any]) -> str:
    r = result["results"]
    rows = [[row["round"], row["clients"], fmt(row["wall_s"], 1), fmt(row["client_work_s"], 1), fmt(row["server_s"], 1),
             fmt(row["runtime_s"], 1), pct(row["outside_client_work_share"]), pct(row["runtime_share"])]
            for row in r["rounds"]]
    text = table(["round", "clients", "wall s", "client work s", "server s", "Flower/Ray/serialization s",
                  "outside client work", "Flower/Ray/serialization"], rows)
    steady = r["time"]["steady_state"]
    text += (f"\n\nSteady state ({steady.get('rounds')} rounds): outside client work "
             f"{pct(steady.get('outside_client_work_share'))}, of which Flower/Ray/serialization "
             f"{pct(steady.get('runtime_share'))}.\n\n")
    text += table(["round", "bytes sent per client", "candidate weights", "surrogate texts", "sent / (weights + texts)",
                   "bytes received per client"],
                  [[b["round"], fmt(b["sent_per_client"], 0), fmt(b["weights_per_client"], 0),
                    fmt(b["texts_per_client"], 0), fmt(b["sent_over_weights_and_texts"], 3),
                    fmt(b["received_per_client"], 0)] for b in r["bytes"]["per_round"]])
    return text


def scale(result: dict[str, Any]) -> str:
    rows = [[s["clients"], s["sampled_per_round"], fmt(s["seconds_per_round"], 1), fmt(s["client_work_per_round_s"], 1),
             fmt(s["final_evaluation_s"], 1), f"{s['peak_tree_pss_bytes'] / 2**30:.2f}", s["processes"]]
            for s in result["results"]["by_size"]]
    return table(["clients", "sampled per round", "s per round", "client work s per round", "final evaluation s",
                  "peak memory GiB (PSS)", "processes seen"], rows)


def targets(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, result in results.items():
        for t in result["targets"]:
            value = t["value"]
            shown = ", ".join(f"{k} {fmt(v)}" for k, v in value.items()) if isinstance(value, dict) else fmt(value)
            verdict = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
            quick = t.get("quick", result["quick"])  # merged targets carry their own run's flag
            rows.append([name + (" (quick)" if quick else ""), t["name"], t["goal"], shown, verdict,
                         t["note"]])
    return table(["benchmark", "figure", "target", "value", "verdict", "note"], rows)


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("search_quality", "1. Search quality", search_quality),
    ("accuracy_surrogate", "2. Accuracy surrogate", accuracy_surrogate),
    ("latency_surrogate", "3. Latency surrogate", latency_surrogate),
    ("cost", "4. Cost", cost),
    ("federation", "6. Federation overhead", federation),
    ("scale", "7. Scale", scale),
]


def render(results: dict[str, dict[str, Any]]) -> str:
    parts = [BEGIN, "", "### Targets", "", targets(results)]
    for name, title, function in SECTIONS:
        parts += ["", f"### {title}", ""]
        if name not in results:
            parts.append(f"_No result yet: run `python -m bench.{name}`._")
            continue
        sections = sections_of(results[name])
        for section in sections:
            if len(sections) > 1:
                parts += [f"**{section.get('settings', {}).get('dataset', '')}**", ""]
            parts += [provenance(section), "", function(section), ""]
        parts.pop()
        if name == "cost":
            parts += ["", "### 5. Budgets met", "", budgets(results)]
    if "accuracy_surrogate" in results:
        parts += ["", "![Kendall tau of the accuracy surrogate against the number of client reports]"
                      "(../bench/results/accuracy_surrogate.png)"]
    parts += ["", END]
    return "\n".join(parts)


def plot_accuracy_curve(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = result["results"]["datasets"]
    figure, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for axis, (key, data) in zip(axes[0], datasets.items()):
        private = data["private"]
        counts = [c["reports"] for c in private["curve"]]
        for label, field in (("corrected", "corrected_tau"), ("private reports only", "private_only_tau")):
            axis.plot(counts, [c[field]["median"] for c in private["curve"]], marker="o", label=label)
        axis.axhline(private["uncorrected_tau"]["median"] or 0.0, color="gray", linestyle="--", label="uncorrected")
        axis.axhline(private["noise_reference_tau"]["median"] or 0.0, color="green", linestyle="-.",
                     label="noise reference")
        axis.axhline(0.75, color="red", linestyle=":", label="target 0.75")
        axis.set(title=f"{key}: private Kendall tau", xlabel="client reports", ylabel="Kendall tau")
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Print or write the generated section and return 0.

    On a missing or invalid results folder or file, print one ``error:`` line to stderr, write nothing and return 2.
    """
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of result files")
    parser.add_argument("--write", type=Path, default=None,
                        help="Markdown file whose generated section to replace (it must contain the markers)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")  # stdout stays the Markdown alone
    try:
        results = load_latest(args.results)
    except ResultFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not results:
        expected = ", ".join(f"{name}.json" for name in NAMES)
        message = f"no result files ({expected}, or <name>-<suffix>.json) in {args.results}"
        if args.write is not None:
            print(f"error: {message}; nothing written", file=sys.stderr)
            return 2
        logger.warning("%s; every table shows 'No result yet'", message)
    text = render(results)
    if args.write is None:
        print(text)
        return 0
    if not args.write.is_file():
        print(f"error: {args.write} does not exist; give the Markdown file that holds the generated section",
              file=sys.stderr)
        return 2
    document = args.write.read_text("utf-8")
    if BEGIN not in document or END not in document:
        print(f"error: {args.write} has no generated-section markers; add the lines\n{BEGIN}\n{END}", file=sys.stderr)
        return 2
    head, rest = document.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    args.write.write_text(head + text + tail, encoding="utf-8")
    if "accuracy_surrogate" in results:
        plot_accuracy_curve(results["accuracy_surrogate"], args.results / "accuracy_surrogate.png")
    return 0

if __name__ == "__main__":
    sys.exit(main())
