"""One lying client must not move the corrected surrogates on the other devices.

Real stage-1 data: accuracies measured in the tiny stage-1 run, and the run's fitted
LightGBM surrogates. Six honest clients (three per device) each measure four of the
run's sampled architectures, as in a search round, where no architecture goes to two
clients of one device. Their accuracy is the stage-1 value with a private-domain shift
and noise, their latency the device's surrogate prediction with a device factor and
noise. A seventh client lies. Each scenario also checks that without the outlier screen
the lie does move the surrogates, so the test can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fl_server.messages import CandidateReport
from fl_server.outliers import screen_observations, split_flagged
from fl_server.report_aggregation import weighted_median
from fl_server.rounds import refit_surrogates
from fl_server.run_dir import RunDirectory
from fl_server.validation import ClientResult
from nas.space import Architecture

DEVICE_A, DEVICE_B = "cpu-1t-fp32", "cpu-1t-fp32-noopt"
SHIFT, ACCURACY_NOISE, DEVICE_FACTOR, LATENCY_NOISE = -0.03, 0.01, 1.3, 0.03


@pytest.fixture(scope="module")
def run(tiny_run_dir: Path) -> RunDirectory:
    return RunDirectory.load(tiny_run_dir)


def result(partition: int, device: str, arch: Architecture, accuracy: float, latency: float) -> ClientResult:
    report = CandidateReport(
        id="c0", accuracy=float(np.clip(accuracy, 0.0, 1.0)), loss=1.0, latency_ms=latency, latency_p10_ms=latency,
        latency_p90_ms=latency, latency_cv=0.01, latency_stable=1.0, pred_accuracy=0.5, pred_latency_ms=latency,
        num_train=100, num_eval=50, train_s=0.1, measure_s=0.1)
    return ClientResult(100 + partition, partition, device, arch, report)


def honest_results(run: RunDirectory, rng: np.random.Generator) -> tuple[list[ClientResult], list[Architecture]]:
    archs = [Architecture.from_dict(s["arch"]) for s in run.accuracy_samples]
    accuracy = {a: s["accuracy"] for a, s in zip(archs, run.accuracy_samples)}
    results = []
    for index, arch in enumerate(archs):
        partition = index % 6
        device = DEVICE_A if partition % 2 == 0 else DEVICE_B
        latency = float(run.latency_predictors[device].predict([arch]).mean[0]) * DEVICE_FACTOR
        results.append(result(partition, device, arch, accuracy[arch] + SHIFT + rng.normal(0, ACCURACY_NOISE),
                              latency * (1 + rng.normal(0, LATENCY_NOISE))))
    return results, archs


def liar_archs(run: RunDirectory, count: int) -> list[Architecture]:
    rng = np.random.default_rng(11)
    return [run.space.sample(rng) for _ in range(count)]


def probe_archs(run: RunDirectory, honest: list[ClientResult], device: str) -> list[Architecture]:
    """The device's honest architectures plus 100 sampled ones: where the search reads the surrogates."""
    rng = np.random.default_rng(5)
    return [r.arch for r in honest if r.device == device] + [run.space.sample(rng) for _ in range(100)]


def corrected(run: RunDirectory, results: list[ClientResult], screen: bool):
    observations = weighted_median(sorted(results, key=lambda r: (r.partition, r.node_id)))
    kept, flagged = observations, []
    if screen:
        flags = screen_observations(observations, run.accuracy_predictor, run.latency_predictors)
        kept, flagged = split_flagged(observations, flags)
    accuracy, latency = refit_surrogates(run.accuracy_predictor, run.latency_predictors, kept)
    return accuracy, latency, flagged


def test_honest_clients_not_flagged(run: RunDirectory) -> None:
    results, _ = honest_results(run, np.random.default_rng(0))
    _, _, flagged = corrected(run, results, screen=True)
    assert flagged == []


def test_random_accuracies_do_not_move_surrogate(run: RunDirectory) -> None:
    honest, archs = honest_results(run, np.random.default_rng(0))
    rng = np.random.default_rng(3)
    lies = [result(6, DEVICE_A, arch, rng.uniform(0, 1), float(run.latency_predictors[DEVICE_A].predict([arch]).mean[0]))
            for arch in liar_archs(run, 4)]
    baseline, _, _ = corrected(run, honest, screen=True)
    robust, _, flagged = corrected(run, honest + lies, screen=True)
    naive, _, _ = corrected(run, honest + lies, screen=False)

    probe = probe_archs(run, honest, DEVICE_B)
    reference = baseline.predict(probe).mean
    shift = np.abs(robust.predict(probe).mean - reference)
    naive_shift = np.abs(naive.predict(probe).mean - reference)
    assert shift.max() <= 0.01, f"accuracy moved by {shift.max():.4f} on {DEVICE_B}"
    assert naive_shift.max() > 0.01, "the lie must move an unscreened correction, or this test cannot fail"
    assert np.abs(robust.predict(archs).mean - baseline.predict(archs).mean).max() <= 0.01
    assert sorted({p for f in flagged for p in f["partitions"]}) == [6]
    assert {f["rule"] for f in flagged} <= {"extreme", "inconsistent-client"}


def test_tenfold_latency_does_not_move_surrogates(run: RunDirectory) -> None:
    honest, _ = honest_results(run, np.random.default_rng(0))
    lies = []
    for arch in liar_archs(run, 4):
        truth = float(run.latency_predictors[DEVICE_A].predict([arch]).mean[0]) * DEVICE_FACTOR
        lies.append(result(6, DEVICE_A, arch, float(run.accuracy_predictor.predict([arch]).mean[0]) + SHIFT,
                           10 * truth))
    _, baseline, _ = corrected(run, honest, screen=True)
    _, robust, flagged = corrected(run, honest + lies, screen=True)
    _, naive, _ = corrected(run, honest + lies, screen=False)

    for device in (DEVICE_A, DEVICE_B):
        probe = probe_archs(run, honest, device)
        reference = baseline[device].predict(probe).mean
        relative = np.abs(robust[device].predict(probe).mean / reference - 1)
        assert relative.max() <= 0.10, f"latency moved by {relative.max():.1%} on {device}"
    probe = probe_archs(run, honest, DEVICE_A)
    naive_relative = np.abs(naive[DEVICE_A].predict(probe).mean / baseline[DEVICE_A].predict(probe).mean - 1)
    assert naive_relative.max() > 0.10, "the lie must move an unscreened correction, or this test cannot fail"
    assert len(flagged) == 4
    assert all(f["rule"] == "extreme" and f["device"] == DEVICE_A for f in flagged)


def test_median_outvotes_liar_on_shared_arch(run: RunDirectory) -> None:
    arch = Architecture.from_dict(run.accuracy_samples[0]["arch"])
    shared = [result(0, DEVICE_A, arch, 0.20, 1.0), result(2, DEVICE_A, arch, 0.21, 1.02),
              result(4, DEVICE_A, arch, 0.95, 10.0)]
    (merged,) = weighted_median(shared)
    assert merged.accuracy == pytest.approx(0.21)
    assert merged.latency_ms == pytest.approx(1.02)
    assert merged.partitions == (0, 2, 4)
