"""Two real processes measuring at once are serialized by the cross-process lock.

The worker runs in processes started with the ``spawn`` method, which import this
module, so torch is imported only inside the parent-side helper.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import warnings
from pathlib import Path
from typing import Any

import pytest

from hw_profiles import builtin_profiles, measure_latency

# Enough timed runs of the conv net below for one measurement to last well over 0.1 s.
REPEATS = 200


def measure_worker(model: bytes, lock_path: str, barrier: Any, output_path: str) -> None:
    profile = builtin_profiles()["cpu-1t-fp32"].replace(warmup=5, repeats=REPEATS, max_attempts=1)
    # The timeout only keeps a worker from waiting forever if its partner died at start-up.
    barrier.wait(timeout=120)
    result = measure_latency(model, profile, lock_path=Path(lock_path))
    Path(output_path).write_text(json.dumps(result.to_dict()))


def conv_net_bytes() -> bytes:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), buffer, input_names=["x"], dynamo=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model() -> bytes:
    return conv_net_bytes()


def run_pair(model: bytes, lock_paths: tuple[Path, Path], folder: Path) -> list[tuple[float, float, float]]:
    """Start two spawned processes that pass a barrier together and then measure.

    Returns ``(started_at, finished_at, lock_wait_s)`` per process, earliest start first.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    outputs = [folder / f"result-{index}.json" for index in range(len(lock_paths))]
    processes = [
        context.Process(target=measure_worker, args=(model, str(path), barrier, str(output)))
        for path, output in zip(lock_paths, outputs)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    intervals = []
    for output in outputs:
        data = json.loads(output.read_text())
        intervals.append((data["started_at"], data["finished_at"], data["lock_wait_s"]))
    return sorted(intervals)


def test_lock_serializes_processes(model: bytes, tmp_path: Path) -> None:
    shared = tmp_path / "shared.lock"
    first, second = run_pair(model, (shared, shared), tmp_path)

    assert first[1] - first[0] > 0.05
    assert second[1] - second[0] > 0.05
    assert first[1] <= second[0], f"measurements overlapped: {first[:2]} and {second[:2]}"
    assert max(first[2], second[2]) > 0.05


def test_separate_locks_overlap(model: bytes, tmp_path: Path) -> None:
    """Control: without a shared lock the same two measurements run at the same time."""
    first, second = run_pair(model, (tmp_path / "a.lock", tmp_path / "b.lock"), tmp_path)

    assert first[1] > second[0], f"measurements did not overlap: {first[:2]} and {second[:2]}"
    assert max(first[2], second[2]) < 0.05
