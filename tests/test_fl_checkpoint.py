"""Atomic checkpoints with a sha256 manifest."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fl_server.checkpoint import jsonable, load_checkpoint, save_checkpoint
from nas.errors import CheckpointError


def test_round_trip_and_overwrite(tmp_path) -> None:
    directory = tmp_path / "checkpoint"
    assert load_checkpoint(directory) is None
    weights = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(4)}
    save_checkpoint(directory, 1, {"round": 1, "tau": math.nan, "x": np.float32(0.5)}, weights)
    save_checkpoint(directory, 2, {"round": 2, "values": np.arange(3)}, weights)
    loaded = load_checkpoint(directory)
    assert loaded.completed_round == 2
    assert loaded.state == {"round": 2, "values": [0, 1, 2]}
    assert torch.equal(loaded.supernet_state["a"], weights["a"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_interrupted_swap_uses_previous(tmp_path) -> None:
    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, 3, {"round": 3})
    directory.rename(tmp_path / "checkpoint.old")
    assert load_checkpoint(directory).completed_round == 3


@pytest.mark.parametrize("victim", ["state.json", "supernet.pt", "manifest.json"])
def test_corrupt_file_is_named(tmp_path, victim) -> None:
    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, 1, {"round": 1}, {"a": torch.ones(3)})
    path = directory / victim
    if victim == "manifest.json":
        path.unlink()
        match = "manifest.json is missing"
    else:
        path.write_bytes(path.read_bytes()[:-3] + b"xyz")
        match = f"{victim} does not match"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(directory)


def test_unreadable_weights_rejected(tmp_path) -> None:
    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, 1, {"round": 1}, {"a": torch.ones(3)})
    (directory / "supernet.pt").write_bytes(b"not a tensor file")
    manifest = json.loads((directory / "manifest.json").read_text())
    import hashlib

    manifest["files"]["supernet.pt"] = hashlib.sha256(b"not a tensor file").hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="supernet.pt is not a readable tensor dict"):
        load_checkpoint(directory)


def test_jsonable_numpy_and_nan() -> None:
    assert jsonable({"a": np.int64(3), "b": [np.inf, 1.0], 2: (np.bool_(True),)}) == {
        "a": 3, "b": [None, 1.0], "2": [True],
    }
