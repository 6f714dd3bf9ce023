"""End-to-end federated search through Flower's real simulation runtime (``flwr run``).

Every test runs a real federation: a SuperLink with its simulation runtime, the
APFP-NAS ServerApp and ClientApps, real data, real ONNX Runtime latency
measurements. Settings are tiny (1-2 rounds, 2 clients, few fine-tuning steps).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from fl_server.run_dir import RunDirectory
from simulations.runner import REPO_ROOT, simulate

TINY = {
    "num-supernodes": 2, "min-clients": 2, "num-rounds": 1, "candidates-per-client": 2, "max-steps": 3,
    "bn-batches": 2, "device-profiles": "cpu-1t-fp32,cpu-1t-fp32-noopt",
}


def load_outputs(report_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    report = json.loads(report_path.read_text("utf-8"))
    history = json.loads((report_path.parent / "history.json").read_text("utf-8"))
    return report, history


def check_history(history: dict[str, Any], run: RunDirectory, output: Path, rounds: int) -> None:
    """Structure of a completed run and the budget check of every recommendation."""
    assert history["status"] == "completed"
    clients = history["clients"]
    devices = sorted({c["device"] for c in clients})
    assert len(devices) >= 2, "the scenario must mix at least two device profiles"
    assert len(history["rounds"]) == rounds
    for entry in history["rounds"]:
        assert entry["accepted"] >= 1
        assert entry["bytes_sent"] > 0
        assert entry["bytes_received"] > 0
        assert set(entry["timings_s"]) >= {"configure", "wait", "aggregate", "total"}
        quality = entry["surrogate_quality"]
        for stage in ("before", "after"):
            assert quality[stage]["accuracy"]["n"] == len(entry["observations"])
            for device, scores in quality[stage]["latency"].items():
                assert device in devices
                assert 0.0 <= scores["within_10pct"] <= 1.0
        for observation in entry["observations"]:
            assert 0.0 <= observation["accuracy"] <= 1.0
            assert observation["latency_ms"] > 0
    rows = history["recommendations"]
    assert sorted((r["device"], r["budget_ms"]) for r in rows) == sorted(
        (d, b) for d in devices for b in run.budgets[d]
    )
    for row in rows:
        assert row["source"] in ("observed", "surrogate", "infeasible")
        if row["source"] == "infeasible":
            continue
        run.space.validate(run.space.decode(row["encoding"]))
        assert 0.0 <= row["measured_accuracy"] <= 1.0
        assert row["num_test_samples"] > 0
        assert row["measured_latency_ms"] > 0
        assert row["predicted_latency_ms"] > 0
        tolerance = run.profiles[row["device"]].tolerance
        assert row["tolerance"] == tolerance
        assert row["meets_budget"] == (row["measured_latency_ms"] <= row["budget_ms"] * (1 + tolerance))
        session = ort.InferenceSession(str(output / row["onnx"]), providers=["CPUExecutionProvider"])
        shape = (1, run.space.in_channels, run.space.resolution, run.space.resolution)
        (logits,) = session.run(None, {"input": np.zeros(shape, np.float32)})
        assert logits.shape == (1, run.space.num_classes)
        assert np.all(np.isfinite(logits))


def test_digits_simulation_end_to_end(tiny_run_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "federated"
    report_path = simulate("digits", run_dir=tiny_run_dir, output_dir=output, overrides=TINY)
    report, history = load_outputs(report_path)
    run = RunDirectory.load(tiny_run_dir)
    check_history(history, run, output, rounds=1)
    assert report["recommendations"]
    assert history["rounds"][0]["rejected"] == 0
    assert (output / "checkpoint" / "manifest.json").is_file()
    assert "4 reports accepted" in (output / "flwr-run.log").read_text("utf-8")


# ------------------------------------------------------------------ bad reports
FAULTY_CLIENT = '''
"""ClientApp that corrupts the replies of partition 1 (tests only)."""
import json

from flwr.clientapp import ClientApp

from fl_client import app as real
from fl_server.messages import INFO, METRICS

app = ClientApp()
app.query()(real.query)
app.evaluate()(real.evaluate)


@app.train()
def train(msg, context):
    reply = real.train(msg, context)
    if context.node_config["partition-id"] == 1:
        metrics = reply.content[METRICS]
        for key in [k for k in metrics if k.startswith("c0.")]:
            metrics["zz." + key[3:]] = metrics[key]
        metrics["c0.accuracy"] = float("nan")
        metrics["c1.latency_ms"] = -1.0
        info = reply.content[INFO]
        info["candidates"] = json.dumps(json.loads(info["candidates"]) + ["zz"])
    return reply
'''

COUNTING_AGGREGATOR = '''
"""Report aggregator that weighs each observation by its number of clients (tests only)."""
import dataclasses

from fl_server.report_aggregation import weighted_median


def by_client_count(results):
    return [dataclasses.replace(r, weight=float(r.num_clients)) for r in weighted_median(results)]
'''


def make_app(tmp_path: Path) -> Path:
    """Return a Flower app dir: this repository's pyproject with the faulty ClientApp and a plug-in."""
    app = tmp_path / "faulty_app"
    app.mkdir()
    pyproject = (REPO_ROOT / "pyproject.toml").read_text("utf-8")
    pyproject = re.sub(r'clientapp = "[^"]+"', 'clientapp = "faulty_client:app"', pyproject)
    (app / "pyproject.toml").write_text(pyproject, "utf-8")
    (app / "faulty_client.py").write_text(FAULTY_CLIENT, "utf-8")
    (app / "counting_aggregator.py").write_text(COUNTING_AGGREGATOR, "utf-8")
    return app


@pytest.mark.slow
def test_bad_reports_rejected_custom_aggregators(tiny_run_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "federated"
    overrides = {**TINY, "privacy": "weights", "report-aggregator": "counting_aggregator:by_client_count",
                 "weight-aggregator": "masked-fedavg"}
    report_path = simulate("digits", run_dir=tiny_run_dir, output_dir=output, overrides=overrides,
                           app_dir=make_app(tmp_path))
    _, history = load_outputs(report_path)
    run = RunDirectory.load(tiny_run_dir)
    check_history(history, run, output, rounds=1)
    entry = history["rounds"][0]
    reasons = {r["candidate"]: r["reason"] for r in entry["rejections"]}
    assert set(reasons) == {"c0", "c1", "zz"}
    assert "non-finite" in reasons["c0"]
    assert "latency_ms" in reasons["c1"]
    assert "unknown candidate" in reasons["zz"]
    assert entry["accepted"] == 2
    assert entry["rejected"] == 3
    assert all(o["weight"] == o["num_clients"] == 1 for o in entry["observations"])
    log = (output / "flwr-run.log").read_text("utf-8")
    assert re.search(r"rejected report of candidate 'zz' from node \d+ \(partition 1\)", log)
    checkpoint = __import__("fl_server.checkpoint", fromlist=["load_checkpoint"]).load_checkpoint(output / "checkpoint")
    merged = checkpoint.supernet_state
    changed = [k for k, v in run.supernet.state_dict().items() if not np.array_equal(v.numpy(), merged[k].numpy())]
    assert changed, "weights mode must merge the returned subnet weights into the supernet"


# ---------------------------------------------------------------------- resume
def assert_same_recommendations(first: dict[str, Any], second: dict[str, Any]) -> None:
    """Same architecture per (device, budget), except where observed accuracies tie.

    Among architectures with equal observed accuracy the measured latency breaks the
    tie, and measured latency is never identical in two runs.
    """
    observed: dict[str, list[dict[str, Any]]] = {}
    for entry in first["rounds"]:
        for o in entry["observations"]:
            observed.setdefault(o["device"], []).append(o)
    for a, b in zip(first["recommendations"], second["recommendations"], strict=True):
        assert (a["device"], a["budget_ms"], a["source"]) == (b["device"], b["budget_ms"], b["source"])
        assert a["observed_accuracy"] == b["observed_accuracy"]
        if a["arch"] != b["arch"]:
            tied = [o["arch"] for o in observed[a["device"]] if o["accuracy"] == a["observed_accuracy"]]
            assert a["arch"] in tied and b["arch"] in tied, f"resumed run recommends another arch for {a['device']}"


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(tiny_run_dir: Path, tmp_path: Path) -> None:
    # Latencies are real measurements and differ between any two runs. So that only
    # the seeded part (client sampling, candidate choice, fine-tuning, accuracy
    # corrections, search state) decides the outcome, the budgets are far above every
    # latency of the space and random search (which does not rank by latency) is used.
    budgets = json.dumps({"cpu-1t-fp32": [1000.0], "cpu-1t-fp32-noopt": [1000.0]})
    settings = {**TINY, "num-rounds": 2, "budgets": budgets, "search-strategy": "random"}
    _, uninterrupted = load_outputs(simulate("digits", run_dir=tiny_run_dir, output_dir=tmp_path / "straight",
                                             overrides=settings))
    stopped = tmp_path / "stopped"
    _, partial = load_outputs(simulate("digits", run_dir=tiny_run_dir, output_dir=stopped,
                                       overrides={**settings, "stop-after-round": 1}))
    assert partial["status"] == "stopped"
    assert len(partial["rounds"]) == 1
    _, resumed = load_outputs(simulate("digits", run_dir=tiny_run_dir, output_dir=stopped, overrides=settings,
                                       resume=True))
    assert resumed["status"] == "completed"
    assert [r["round"] for r in resumed["rounds"]] == [1, 2]
    for first, second in zip(uninterrupted["rounds"], resumed["rounds"], strict=True):
        assert [[x["arch"] for x in c["candidates"]] for c in first["clients"]] == [
            [x["arch"] for x in c["candidates"]] for c in second["clients"]
        ]
        assert [(o["arch"], o["accuracy"]) for o in first["observations"]] == [
            (o["arch"], o["accuracy"]) for o in second["observations"]
        ]
    assert_same_recommendations(uninterrupted, resumed)


def test_resume_rejects_corrupt_checkpoint(tiny_run_dir: Path, tmp_path: Path) -> None:
    from fl_server.app import ServerSettings
    from fl_server.checkpoint import save_checkpoint
    from fl_server.strategy import FederatedNasStrategy
    from nas.errors import CheckpointError

    output = tmp_path / "federated"
    save_checkpoint(output / "checkpoint", 1, {"round": 1})
    (output / "checkpoint" / "state.json").write_text("{}", "utf-8")
    strategy = FederatedNasStrategy(RunDirectory.load(tiny_run_dir),
                                    ServerSettings(run_dir=tiny_run_dir, output_dir=output, resume=True))
    with pytest.raises(CheckpointError, match="state.json"):
        strategy.restore()


# ------------------------------------------------------------------ RetinaMNIST
@pytest.mark.slow
def test_retinamnist_simulation_end_to_end(medmnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from fl_server.pretrain import PretrainConfig, pretrain

    root = tmp_path_factory.mktemp("retina")
    run = pretrain(root / "run", PretrainConfig(
        dataset="medmnist:retinamnist", data_root=str(medmnist_dir), epochs=1, num_accuracy_samples=12,
        num_latency_samples=12, profiles=("cpu-1t-fp32", "cpu-1t-fp32-noopt"), search_evaluations=50,
        progress=False))
    output = root / "federated"
    report_path = simulate("retinamnist", run_dir=run.path, output_dir=output, data_root=medmnist_dir,
                           overrides=TINY)
    _, history = load_outputs(report_path)
    check_history(history, RunDirectory.load(run.path), output, rounds=1)
    assert history["data"]["dataset"] == "medmnist:retinamnist"
    assert not math.isnan(history["rounds"][0]["observations"][0]["accuracy"])
    shutil.rmtree(root, ignore_errors=True)
