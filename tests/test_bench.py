"""The benchmarks' --quick modes on tiny settings, so every benchmark keeps working.

These check that each benchmark runs against the real components (supernet,
surrogates, ONNX Runtime timings, Flower's simulation runtime) and writes a
complete result envelope. They do not check the figures against their targets.
Only the latency benchmark (a few seconds) and the unit checks are in the fast
suite; the others train, fine-tune or start Flower and are marked slow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import common, report  # noqa: E402
from bench.procs import TreeSampler  # noqa: E402

TWO_DEVICES = "device-profiles=\"cpu-1t-fp32,cpu-1t-fp32-noopt\""


@pytest.fixture
def keep_torch_threads():
    """Restore torch's thread count, which a benchmark's main() sets to --threads."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def check_envelope(data: dict[str, Any], name: str, quick: bool = True) -> None:
    assert data["benchmark"] == name
    assert data["quick"] is quick
    assert data["command"].startswith(f"python -m bench.{name}")
    assert data["machine"]["cpu_model"]
    assert data["machine"]["usable_cores"] >= 1
    assert data["machine"]["memory_gib"] is None or data["machine"]["memory_gib"] > 0
    for key in ("git", "git_at_end"):  # recorded when the run starts and when it ends
        commit = data[key]["commit"]
        assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    assert data["seeds"] == [0]
    assert data["wall_s"] > 0
    assert data["cpu_self_s"] > 0
    assert data["targets"], "every benchmark checks at least one target"
    for target in data["targets"]:
        assert target["met"] in (True, False, None)
        assert target["goal"]


def run_main(module: Any, tmp_path: Path, *args: str) -> dict[str, Any]:
    output = tmp_path / "result.json"
    path = module.main(["--quick", "--output", str(output), "--cache-dir", str(tmp_path / "cache"), *args])
    assert path == output
    return json.loads(output.read_text("utf-8"))


# ----------------------------------------------------------------- fast checks
def test_parse_seeds_count_and_list() -> None:
    assert common.parse_seeds("3") == [0, 1, 2]
    assert common.parse_seeds("4,7") == [4, 7]
    with pytest.raises(Exception, match="--seeds"):
        common.parse_seeds("x")
    with pytest.raises(Exception, match="--seeds"):
        common.parse_seeds("-1,2")


def test_spread_ignores_missing_values() -> None:
    assert common.spread([0.2, None, float("nan"), 0.6, 0.4]) == {"median": 0.4, "min": 0.2, "max": 0.6, "n": 3}
    assert common.spread([1.0, 3.0])["median"] == 2.0
    assert common.spread([]) == {"median": None, "min": None, "max": None, "n": 0}
    assert common.finite_or_none({"a": [float("inf"), 1.5]}) == {"a": [None, 1.5]}


def test_tree_sampler_counts_child_cpu() -> None:
    busy = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\n"
    with TreeSampler(0.1) as sampler:
        subprocess.run([sys.executable, "-c", busy], check=True)
    summary = sampler.summary()
    assert summary["descendants_cpu_s"] >= 0.5
    assert summary["descendant_processes"] >= 1
    assert summary["peak_descendants_pss_bytes"] > 0
    assert summary["peak_tree_pss_bytes"] > summary["peak_descendants_pss_bytes"]


def test_latency_bench_quick_cli(tmp_path: Path) -> None:
    output = tmp_path / "results" / "latency_surrogate-quick.json"
    command = [sys.executable, "-m", "bench.latency_surrogate", "--quick", "--samples", "9", "--repeat", "3",
               "--profiles", "cpu-1t-fp32", "--output", str(output)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(output.read_text("utf-8"))
    check_envelope(data, "latency_surrogate")
    found = data["results"]["spaces"]["digits"]
    assert found["samples"] == 9
    assert len(found["measurements_ms"]["cpu-1t-fp32"]) == 9
    profile = found["profiles"]["cpu-1t-fp32"]
    assert 0.0 <= profile["predictor"]["within_10pct"] <= 1.0
    assert 0.0 <= profile["flops_baseline"]["within_10pct"] <= 1.0
    assert profile["predictor"]["mape"] >= 0.0
    assert profile["held_out_predictions"] == 3
    assert profile["noise_reference"]["n"] == 3

    text = report.render({"latency_surrogate": data})
    assert "| digits (1x16x16) | cpu-1t-fp32 |" in text
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\n{report.BEGIN}\nold\n{report.END}\n\nHand-written notes.\n", encoding="utf-8")
    assert report.main(["--results", str(output.parent), "--write", str(doc)]) == 0
    written = doc.read_text("utf-8")
    assert "old" not in written
    assert "cpu-1t-fp32" in written
    assert written.startswith("# Title")
    assert written.rstrip().endswith("Hand-written notes.")


def test_bench_rejects_unknown_dataset(tmp_path: Path, keep_torch_threads: None) -> None:
    from bench import search_quality
    from nas.errors import ApfpError

    with pytest.raises(ApfpError, match="--datasets"):
        run_main(search_quality, tmp_path, "--datasets", "mnist")


# ----------------------------------------------------------------- slow checks
@pytest.mark.slow
def test_search_quality_quick_tiny(tiny_run_dir: Path, tmp_path: Path, keep_torch_threads: None) -> None:
    from bench import search_quality

    data = run_main(search_quality, tmp_path, "--run-dir", str(tiny_run_dir), "--datasets", "digits", "--pool", "5",
                    "--set", TWO_DEVICES, "--set", "num-supernodes=2", "--set", "max-steps=2")
    check_envelope(data, "search_quality")
    found = data["results"]["datasets"]["digits"]
    budget = sum(found["evaluations_per_device"].values())
    assert budget == 1 * 2 * found["candidates_per_client"]
    strategies = {r["strategy"] for r in found["runs"]}
    assert strategies == {"apfp-nas", "evolution", "random", "optuna-nsga2"}
    targets = len(found["oracle"])
    for entry in found["runs"]:
        if entry["strategy"] == "apfp-nas":
            assert entry["client_evaluations"] == budget
        assert 1 <= entry["client_evaluations"] <= budget
        assert len(entry["recommendations"]) == targets
        for row in entry["recommendations"]:
            assert row["true_accuracy"] is None or 0.0 <= row["true_accuracy"] <= 1.0
            assert row["fresh_latency_ms"] is None or row["fresh_latency_ms"] > 0
    for name, summary in found["summary"]["strategies"].items():
        assert 0.0 <= summary["budget_met_share"] <= 1.0, name

    # Per-dataset runs (--output search_quality-<dataset>.json) merge into one report section.
    results = tmp_path / "results"
    results.mkdir()
    other = json.loads(json.dumps(data).replace('"digits"', '"other"'))
    for suffix, part in (("digits", data), ("other", other)):
        (results / f"search_quality-{suffix}.json").write_text(json.dumps(part), "utf-8")
    (results / "search_quality-quick.json").write_text(json.dumps(other), "utf-8")  # ignored: per-dataset parts exist
    merged = report.load_latest(results)["search_quality"]
    assert list(merged["results"]["datasets"]) == ["digits", "other"]
    assert len(merged["targets"]) == 2 * len(data["targets"])
    text = report.render({"search_quality": merged})
    assert "**digits**" in text and "**other**" in text
    assert text.count("_full run") == 0 and text.count("_quick run") == 2


@pytest.mark.slow
def test_accuracy_surrogate_quick_tiny(tiny_run_dir: Path, tmp_path: Path, keep_torch_threads: None) -> None:
    from bench import accuracy_surrogate

    data = run_main(accuracy_surrogate, tmp_path, "--run-dir", str(tiny_run_dir), "--datasets", "digits",
                    "--pool", "8", "--counts", "2,4", "--set", TWO_DEVICES, "--set", "num-supernodes=2",
                    "--set", "max-steps=2")
    check_envelope(data, "accuracy_surrogate")
    found = data["results"]["datasets"]["digits"]
    stage1_samples = json.loads((tiny_run_dir / "samples" / "accuracy.json").read_text("utf-8"))
    assert found["public"]["num_samples"] == len(stage1_samples)
    assert [c["reports"] for c in found["private"]["curve"]] == [2, 4]
    for row in found["private"]["per_seed"]:
        assert row["held_out"] == 4
        for entry in row["by_count"]:
            tau = entry["corrected"]["kendall_tau"]
            assert tau is None or -1.0 <= tau <= 1.0


@pytest.mark.slow
def test_federation_quick_tiny(tiny_run_dir: Path, tmp_path: Path, keep_torch_threads: None) -> None:
    from bench import federation

    data = run_main(federation, tmp_path, "--run-dir", str(tiny_run_dir), "--set", TWO_DEVICES)
    check_envelope(data, "federation")
    found = data["results"]
    assert [r["round"] for r in found["rounds"]] == [1, 2]
    for row in found["rounds"]:
        assert row["client_work_s"] > 0
        assert row["wall_s"] > row["client_work_s"]
        assert 0.0 < row["outside_client_work_share"] < 1.0
    for row in found["bytes"]["per_round"]:
        # The weights travel as they are, the surrogate texts compressed, so the payload lies in between.
        assert row["sent_over_weights"] >= 1.0
        assert row["sent_over_weights_and_texts"] < 1.0
    assert found["usage"]["descendants_cpu_s"] > 0
    assert found["budgets"]["measured"] >= 1


@pytest.mark.slow
def test_cost_quick(tmp_path: Path, keep_torch_threads: None) -> None:
    from bench import cost

    data = run_main(cost, tmp_path, "--set", TWO_DEVICES)
    check_envelope(data, "cost")
    found = data["results"]
    assert found["candidates"] >= 1
    assert len(found["scratch"]) == 1
    assert found["two_stage_cpu_s"] > found["stage1"]["cpu_total_s"] > 0
    assert found["scratch_cpu_estimate_s"] > 0
    assert found["ratio"] > 0
    assert found["scratch"][0]["epochs"] <= 2


@pytest.mark.slow
def test_scale_quick_two_sizes(tmp_path: Path, keep_torch_threads: None) -> None:
    from bench import scale

    data = run_main(scale, tmp_path, "--sizes", "2,3", "--sampled", "2", "--set", TWO_DEVICES)
    check_envelope(data, "scale")
    sizes = data["results"]["by_size"]
    assert [s["clients"] for s in sizes] == [2, 3]
    for size in sizes:
        assert size["seconds_per_round"] > 0
        assert len(size["rounds"]) == 1
        assert size["rounds"][0]["clients"] == 2
        assert 0 < size["peak_tree_pss_bytes"] < 8 * 2**30


def test_parts_without_dataset_sections_render_one_each() -> None:
    def part(dataset: str, met: float) -> dict[str, Any]:
        budgets = {"measured": 6, "met_share": met, "met_share_with_tolerance": 1.0}
        return {"quick": False, "settings": {"dataset": dataset}, "results": {"budgets": budgets},
                "targets": [{"name": "stage-2 recommendations meeting the budget", "goal": "100%", "value": met,
                             "met": met >= 1.0, "note": ""}]}

    merged = report.merge_parts([part("digits", 1.0), part("retinamnist", 0.5)])
    assert [t["name"] for t in merged["targets"]] == ["digits: stage-2 recommendations meeting the budget",
                                                      "retinamnist: stage-2 recommendations meeting the budget"]
    assert [s["settings"]["dataset"] for s in report.sections_of(merged)] == ["digits", "retinamnist"]
    text = report.budgets({"cost": merged})
    assert "| cost digits: stage 2 through Flower (6 measured) | 100.0% |" in text
    assert "| cost retinamnist: stage 2 through Flower (6 measured) | 50.0% |" in text


# ------------------------------------------------------- report: result files
def envelope(dataset: str | None = "digits", quick: bool = False, met: bool = True) -> dict[str, Any]:
    """A federation result with every key the report reads and empty tables."""
    return {"benchmark": "federation", "quick": quick, "command": "python -m bench.federation",
            "git": {"commit": None, "dirty": False},
            "machine": {"cpu_model": "test cpu", "usable_cores": 2, "memory_gib": 24},
            "torch_threads": 1, "seeds": [0], "wall_s": 1.0, "finished_at": "2025-01-01T00:00:00",
            "settings": {"dataset": dataset} if dataset else {},
            "results": {"rounds": [], "time": {"steady_state": {}}, "bytes": {"per_round": []},
                        "budgets": {"measured": 2, "met_share": 1.0 if met else 0.5, "met_share_with_tolerance": 1.0}},
            "targets": [{"name": "budget met", "goal": "100%", "value": 1.0, "met": met, "note": ""}]}


def write_results(folder: Path, files: dict[str, Any]) -> Path:
    """Write each value of ``files`` (text as is, anything else as JSON) under its name in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_text(data if isinstance(data, str) else json.dumps(data), "utf-8")
    return folder


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    """A Markdown file with an old generated section, for ``--write``."""
    path = tmp_path / "benchmarks.md"
    path.write_text(f"# Title\n\n{report.BEGIN}\nold table\n{report.END}\n", encoding="utf-8")
    return path


def test_report_missing_folder_writes_nothing(tmp_path: Path, doc: Path, capsys) -> None:
    before = doc.read_text("utf-8")
    missing = tmp_path / "no-such-folder"
    assert report.main(["--results", str(missing), "--write", str(doc)]) == 2
    assert capsys.readouterr().err.strip() == f"error: results folder {missing} does not exist"
    assert report.main(["--results", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "does not exist" in captured.err
    assert doc.read_text("utf-8") == before


def test_report_empty_folder_writes_nothing(tmp_path: Path, doc: Path, capsys) -> None:
    before = doc.read_text("utf-8")
    folder = write_results(tmp_path / "results", {"notes.json": "{}"})  # not a result file name
    assert report.main(["--results", str(folder), "--write", str(doc)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no result files (search_quality.json")
    assert f"in {folder}; nothing written" in err
    assert doc.read_text("utf-8") == before


@pytest.mark.parametrize("content, problem", [
    ("", "is empty"),
    ("{\"benchmark\": ", "is not valid JSON"),
    ("[]", "contains a JSON list"),
    ("{}", "missing keys ['benchmark'"),
    (json.dumps({**envelope(), "targets": [{"name": "budget met"}]}), "missing keys ['targets[0].goal'"),
    (json.dumps({**envelope(), "results": {"rounds": []}}), "missing keys ['results.time'"),
    (json.dumps({**envelope(), "benchmark": "cost"}), "contains a result of benchmark 'cost'"),
])
def test_report_rejects_broken_result_file(tmp_path: Path, doc: Path, capsys, content: str, problem: str) -> None:
    before = doc.read_text("utf-8")
    folder = write_results(tmp_path / "results", {"federation.json": content})
    assert report.main(["--results", str(folder), "--write", str(doc)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: result file {folder / 'federation.json'} "), err
    assert problem in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert doc.read_text("utf-8") == before


def test_report_skips_quick_part_beside_full(tmp_path: Path, caplog) -> None:
    # A quick run saved with --output under a per-dataset name is not merged into the full runs.
    folder = write_results(tmp_path / "results", {
        "federation.json": envelope("digits"),
        "federation-retinamnist.json": envelope("retinamnist", quick=True, met=False)})
    with caplog.at_level("WARNING"):
        found = report.load_latest(folder)["federation"]
    assert [p["settings"]["dataset"] for p in found["parts"]] == ["digits"]
    assert [t["name"] for t in found["targets"]] == ["digits: budget met"]
    notices = [r.getMessage() for r in caplog.records if r.name == "bench.results_io"]
    assert len(notices) == 1
    assert "federation-retinamnist.json" in notices[0]

    # Without full results the quick parts are shown, each target labelled by its own run.
    folder.joinpath("federation.json").unlink()
    assert "| federation (quick) | retinamnist: budget met |" in report.targets(report.load_latest(folder))
    mixed = report.merge_parts([envelope("digits"), envelope("retinamnist", quick=True)])
    text = report.targets({"federation": mixed})
    assert "| federation | digits: budget met |" in text
    assert "| federation (quick) | retinamnist: budget met |" in text


def test_report_rejects_duplicate_dataset(tmp_path: Path, doc: Path, capsys) -> None:
    before = doc.read_text("utf-8")
    folder = write_results(tmp_path / "fed", {"federation.json": envelope("digits"),
                                              "federation-again.json": envelope("digits", met=False)})
    with pytest.raises(report.ResultFileError, match="federation-again.json both contain dataset 'digits'"):
        report.load_latest(folder)
    assert report.main(["--results", str(folder), "--write", str(doc)]) == 2
    assert "both contain dataset 'digits'; keep one" in capsys.readouterr().err
    assert doc.read_text("utf-8") == before

    search = {**envelope(), "benchmark": "search_quality", "results": {"datasets": {"digits": {}}}}
    folder = write_results(tmp_path / "sq", {"search_quality-a.json": search, "search_quality-b.json": search})
    with pytest.raises(report.ResultFileError, match=r"search_quality-a.json and .*search_quality-b.json both"):
        report.load_latest(folder)

    folder = write_results(tmp_path / "none", {"federation.json": envelope(None), "federation-x.json": envelope(None)})
    with pytest.raises(report.ResultFileError, match=r"both contain a result without a dataset"):
        report.load_latest(folder)


def test_report_prefixes_single_file_targets(tmp_path: Path) -> None:
    for name, dataset in (("federation-retinamnist.json", "retinamnist"), ("federation.json", "digits")):
        folder = write_results(tmp_path / dataset, {name: envelope(dataset)})
        results = report.load_latest(folder)
        assert [t["name"] for t in results["federation"]["targets"]] == [f"{dataset}: budget met"]
        assert len(report.sections_of(results["federation"])) == 1
        text = report.render(results)
        assert f"| federation | {dataset}: budget met | 100% |" in text
        assert f"**{dataset}**" not in text
        assert text.count("_full run") == 1


def test_report_names_ignored_quick_file_on_stderr(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "results", {"federation.json": envelope("digits"),
                                                  "federation-quick.json": envelope("digits", quick=True)})
    command = [sys.executable, "-m", "bench.report", "--results", str(folder)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == report.render(report.load_latest(folder)) + "\n"
    assert "(quick)" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "federation-quick.json" in lines[0]
