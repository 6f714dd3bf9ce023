"""Checkpoints of a federated search, written after every completed round.

Layout of ``<output-dir>/checkpoint/``::

    state.json      JSON state: completed round, observations, search strategy state,
                    run history, settings fingerprint
    supernet.pt     supernet state dict (``weights`` privacy mode), read with weights_only=True
    manifest.json   format version, completed round and the sha256 of every other file

A checkpoint is written into ``checkpoint.tmp/`` first (every file flushed to disk,
the manifest last) and then swapped in by renames, so a run stopped at any moment
leaves either the previous or the new checkpoint, never a mix. Loading checks the
manifest and every hash; a missing, partial or edited file raises
:class:`~nas.errors.CheckpointError` naming it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from nas.errors import CheckpointError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATE_FILE = "state.json"
SUPERNET_FILE = "supernet.pt"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the last completed round, the JSON state and the optional supernet weights."""

    path: Path
    completed_round: int
    state: dict[str, Any]
    supernet_state: dict[str, torch.Tensor] | None


def jsonable(value: Any) -> Any:
    """Return ``value`` as strict-JSON data: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _write(path: Path, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(
    directory: str | Path,
    completed_round: int,
    state: Mapping[str, Any],
    supernet_state: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint of ``completed_round`` to ``directory`` atomically; return the directory."""
    target = Path(directory)
    tmp = target.with_name(target.name + ".tmp")
    old = target.with_name(target.name + ".old")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files = {STATE_FILE: _write(tmp / STATE_FILE, json.dumps(jsonable(state), sort_keys=True).encode("utf-8"))}
    if supernet_state is not None:
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu().clone() for k, v in supernet_state.items()}, buffer)
        files[SUPERNET_FILE] = _write(tmp / SUPERNET_FILE, buffer.getvalue())
    manifest = {"format": FORMAT_VERSION, "completed_round": int(completed_round), "files": files}
    _write(tmp / MANIFEST_FILE, json.dumps(manifest, sort_keys=True, indent=1).encode("utf-8"))
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)
    logger.info("checkpoint of round %d written to %s", completed_round, target)
    return target


def load_checkpoint(directory: str | Path) -> Checkpoint | None:
    """Return the checkpoint in ``directory``, or None when there is none.

    A run stopped between the two renames of :func:`save_checkpoint` left only
    ``<directory>.old``, which is then used. Raises :class:`CheckpointError` for a
    corrupt or partial checkpoint, naming the file.
    """
    target = Path(directory)
    if not target.exists():
        old = target.with_name(target.name + ".old")
        if not old.exists():
            return None
        logger.warning("using %s: the last checkpoint swap was interrupted", old)
        target = old
    manifest_path = target / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(
            f"checkpoint file {manifest_path} is missing (partial checkpoint); delete {target} to start over"
        )
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        files = dict(manifest["files"])
        completed = int(manifest["completed_round"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint file {manifest_path} is corrupt: {error}; delete {target}") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint file {manifest_path} has format {manifest.get('format')!r}; this version reads "
            f"{FORMAT_VERSION}"
        )
    if STATE_FILE not in files:
        raise CheckpointError(f"checkpoint file {manifest_path} does not list {STATE_FILE}")
    contents = {}
    for name, digest in files.items():
        path = target / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing; delete {target} to start over")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise CheckpointError(f"checkpoint file {path} does not match its sha256 in {MANIFEST_FILE} (corrupt)")
        contents[name] = data
    try:
        state = json.loads(contents[STATE_FILE].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint file {target / STATE_FILE} is not valid JSON: {error}") from None
    supernet_state = None
    if SUPERNET_FILE in contents:
        supernet_state = _load_tensors(contents[SUPERNET_FILE], target / SUPERNET_FILE)
    return Checkpoint(target, completed, state, supernet_state)


def _load_tensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise CheckpointError(f"checkpoint file {path} is not a readable tensor dict: {error}") from None
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"checkpoint file {path} does not contain a dict of tensors")
    return loaded
