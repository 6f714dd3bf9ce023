"""Wire codec between the APFP-NAS ServerApp and ClientApp (shared by both sides).

Every message the server sends is a fresh ``RecordDict`` built for one client:

* ``ConfigRecord "config"``: ``round``, ``seed``, ``privacy``, ``device``, the training
  settings (``finetune-epochs``, ``lr``, ``batch-size``, ``bn-batches``,
  ``max-steps``), ``space`` (search-space JSON), ``candidates`` (JSON list of
  ``{"id": str, "arch": space.arch_to_wire(arch)}``) and ``data`` (JSON object that
  names the private data the client loads; see :class:`DataSpec`).
* ``ArrayRecord "surrogates"``: surrogate texts, UTF-8 compressed with zlib (about
  3x smaller), as 1-D ``uint8`` arrays under ``"accuracy"`` and
  ``"latency/<profile>"`` (texts can exceed what one ``ConfigRecord`` should
  carry; arrays are chunked by Flower). A text that inflates beyond
  :data:`MAX_SURROGATE_BYTES` is rejected.
* ``ArrayRecord "arrays"``: every candidate's subnet weights under
  ``"<candidate id>/<subnet state key>"``.

A client replies with ``MetricRecord "metrics"`` (``"<candidate id>.<field>"`` for
every field of :data:`REPORT_FIELDS`, plus ``num-examples``), ``ConfigRecord
"info"`` (``device`` and ``candidates``, the JSON list of reported ids) and, in the
``weights`` privacy mode only, ``ArrayRecord "arrays"`` with exactly the keys it was
sent. Nothing here unpickles or evaluates received text: JSON and ``numpy.load``
with ``allow_pickle=False`` only. This module decodes structure; value checks live
in :mod:`fl_server.validation`.
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from nas.errors import ReportError
from nas.space import Architecture, SearchSpace

CONFIG = "config"
SURROGATES = "surrogates"
ARRAYS = "arrays"
METRICS = "metrics"
INFO = "info"
NUM_EXAMPLES = "num-examples"
PRIVACY_MODES = ("metrics", "weights")
ACCURACY_SURROGATE = "accuracy"
LATENCY_PREFIX = "latency/"
CANDIDATE_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

#: Per-candidate reply fields. ``num_eval`` travels as ``num_val`` in train replies and
#: as ``num_test`` in evaluate replies; ``latency_stable`` is 1.0 or 0.0.
REPORT_FIELDS = (
    "accuracy", "loss", "latency_ms", "latency_p10_ms", "latency_p90_ms", "latency_cv", "latency_stable",
    "pred_accuracy", "pred_latency_ms", "num_train", "num_eval", "train_s", "measure_s",
)
EVAL_KEY = {"train": "num_val", "evaluate": "num_test"}
#: Optional fields of evaluate replies: the membership-inference AUC of the model as the
#: server released it and of the client's fine-tuned copy (see :mod:`fl_client.privacy_audit`).
AUDIT_FIELDS = ("mia_auc", "mia_auc_finetuned")
#: Message config key of the DP clipping norm; the key Flower's DP mods and wrappers use.
CLIPPING_NORM = "clipping_norm"
#: Largest surrogate text a client inflates, in bytes (a LightGBM text is a few MB).
MAX_SURROGATE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class TrainingSettings:
    """Local work settings: epochs and optimizer steps of fine-tuning, batches for BN recalibration.

    ``max_steps`` 0 means no step limit (only ``finetune_epochs`` passes). ``lr`` is the
    peak SGD learning rate; ``batch_size`` is in samples.
    """

    finetune_epochs: int = 1
    lr: float = 0.01
    batch_size: int = 32
    bn_batches: int = 4
    max_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("finetune_epochs", "batch_size", "bn_batches"):
            _require_int(getattr(self, name), name, 1)
        _require_int(self.max_steps, "max_steps", 0)
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not (0 < self.lr < math.inf):
            raise ReportError(f"lr={self.lr!r} is invalid; use a positive learning rate")

    def to_config(self) -> dict[str, Any]:
        return {
            "finetune-epochs": self.finetune_epochs, "lr": float(self.lr), "batch-size": self.batch_size,
            "bn-batches": self.bn_batches, "max-steps": self.max_steps,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "TrainingSettings":
        try:
            return cls(
                finetune_epochs=config["finetune-epochs"], lr=config["lr"], batch_size=config["batch-size"],
                bn_batches=config["bn-batches"], max_steps=config["max-steps"],
            )
        except KeyError as error:
            raise ReportError(f"training settings lack key {error}; the server sent an incomplete message") from None


@dataclass(frozen=True)
class DataSpec:
    """Description of the private data a client loads: the dataset, its private part and the split.

    The client loads ``dataset`` (from ``data_root``), keeps the ``private`` part of
    :func:`nas.data.holdout.split_public_private` (``private_fraction``, ``split_seed``;
    ``private_fraction`` 0 keeps the whole dataset), resizes it to the space's
    resolution and takes partition ``partition-id`` of ``num-partitions`` made with
    ``scheme`` (``iid`` or ``dirichlet`` with ``alpha``) and ``partition_seed``.
    """

    dataset: str
    data_root: str = ""
    private_fraction: float = 0.5
    split_seed: int = 0
    scheme: str = "dirichlet"
    alpha: float = 0.5
    partition_seed: int = 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DataSpec":
        data = _load_json(text, "data")
        if not isinstance(data, dict):
            raise ReportError("message field 'data' must be a JSON object")
        try:
            return cls(**data)
        except TypeError as error:
            raise ReportError(f"message field 'data' is invalid: {error}") from None


@dataclass(frozen=True)
class Candidate:
    """One architecture sent to a client under a short id (letters, digits, ``-``, ``_``)."""

    id: str
    arch: Architecture

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not CANDIDATE_ID.match(self.id):
            raise ReportError(f"candidate id {self.id!r} is invalid; use 1-32 letters, digits, '-' or '_'")


@dataclass(frozen=True)
class Instruction:
    """Everything one client needs for one round (``kind`` "train") or the final evaluation ("evaluate")."""

    kind: str
    round: int
    seed: int
    privacy: str
    device: str
    settings: TrainingSettings
    space: SearchSpace
    data: DataSpec
    candidates: tuple[Candidate, ...]
    surrogates: Mapping[str, str] = field(default_factory=dict)
    weights: Mapping[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    clipping_norm: float = 0.0


def encode_instruction(instruction: Instruction) -> RecordDict:
    """Return a new ``RecordDict`` carrying ``instruction`` (never shared between messages)."""
    if instruction.privacy not in PRIVACY_MODES:
        raise ReportError(f"privacy={instruction.privacy!r} is invalid; allowed values: {PRIVACY_MODES}")
    ids = [c.id for c in instruction.candidates]
    if len(set(ids)) != len(ids):
        raise ReportError(f"candidate ids {ids} are not unique")
    space = instruction.space
    wire_candidates = [{"id": c.id, "arch": space.arch_to_wire(c.arch)} for c in instruction.candidates]
    config = ConfigRecord(
        {
            "kind": instruction.kind, "round": int(instruction.round), "seed": int(instruction.seed),
            "privacy": instruction.privacy, "device": instruction.device, **instruction.settings.to_config(),
            "space": space.to_json(), "data": instruction.data.to_json(),
            "candidates": json.dumps(wire_candidates),
        }
    )
    if instruction.clipping_norm > 0:
        config[CLIPPING_NORM] = float(instruction.clipping_norm)
    for name, text in instruction.surrogates.items():
        size = len(text.encode("utf-8"))
        if size > MAX_SURROGATE_BYTES:
            raise ReportError(f"surrogate {name!r} has {size} bytes, above MAX_SURROGATE_BYTES={MAX_SURROGATE_BYTES} "
                              "that clients accept")
    surrogates = ArrayRecord({name: Array(_compress(text)) for name, text in instruction.surrogates.items()})
    arrays = ArrayRecord()
    for cid, state in instruction.weights.items():
        if cid not in ids:
            raise ReportError(f"weights given for candidate {cid!r}, which is not among {ids}")
        for key, value in state.items():
            arrays[f"{cid}/{key}"] = Array(np.asarray(value, order="C"))
    return RecordDict({CONFIG: config, SURROGATES: surrogates, ARRAYS: arrays})


@functools.lru_cache(maxsize=16)
def _compress(text: str) -> np.ndarray:
    """Return ``text`` as zlib-compressed UTF-8 bytes; cached, as every client of a round gets the same texts."""
    array = np.frombuffer(zlib.compress(text.encode("utf-8"), 1), dtype=np.uint8).copy()
    array.flags.writeable = False
    return array


def _inflate(name: str, data: bytes) -> str:
    """Undo :func:`_compress`; reject corrupt data and texts above :data:`MAX_SURROGATE_BYTES`."""
    if not data:
        raise ReportError(f"surrogate {name!r} is empty; the server sends every surrogate text compressed")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, MAX_SURROGATE_BYTES)
    except zlib.error as error:
        raise ReportError(f"surrogate {name!r} is not zlib-compressed text ({error}); the server and client "
                          "must run the same APFP-NAS version") from error
    if inflater.unconsumed_tail:
        raise ReportError(f"surrogate {name!r} inflates beyond MAX_SURROGATE_BYTES={MAX_SURROGATE_BYTES} bytes; "
                          "the server must send a smaller surrogate")
    if not inflater.eof:
        raise ReportError(f"surrogate {name!r} is truncated: its compressed stream of {len(data)} bytes ends early")
    if inflater.unused_data:
        raise ReportError(f"surrogate {name!r} has {len(inflater.unused_data)} bytes after the end of its "
                          "compressed stream")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ReportError(f"surrogate {name!r} is not UTF-8 text after inflating ({error})") from error


def decode_instruction(content: RecordDict) -> Instruction:
    """Parse and validate a server message; raise :class:`ReportError` naming the bad field."""
    config = _record(content, CONFIG, ConfigRecord)
    space_data = _load_json(_get(config, "space", str), "space")
    if not isinstance(space_data, dict):
        raise ReportError("message field 'space' must be a JSON object")
    space = SearchSpace.from_dict(space_data)
    items = _load_json(_get(config, "candidates", str), "candidates")
    if not isinstance(items, list) or not items:
        raise ReportError("message field 'candidates' must be a non-empty JSON list")
    candidates = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"id", "arch"}:
            raise ReportError(f"candidate entry {str(item)[:120]!r} must be an object with keys 'id' and 'arch'")
        candidates.append(Candidate(item["id"], space.arch_from_wire(item["arch"])))
    privacy = _get(config, "privacy", str)
    if privacy not in PRIVACY_MODES:
        raise ReportError(f"privacy={privacy!r} is invalid; allowed values: {PRIVACY_MODES}")
    surrogates = {}
    if SURROGATES in content.array_records:
        for name, array in content.array_records[SURROGATES].items():
            values = array.numpy()
            if values.dtype != np.uint8 or values.ndim != 1:
                raise ReportError(f"surrogate {name!r} must be a 1-D uint8 array, got {values.dtype} {values.shape}")
            surrogates[name] = _inflate(name, values.tobytes())
    ids = {c.id for c in candidates}
    weights: dict[str, dict[str, np.ndarray]] = {}
    if ARRAYS in content.array_records:
        for key, array in content.array_records[ARRAYS].items():
            cid, _, state_key = key.partition("/")
            if cid not in ids or not state_key:
                raise ReportError(f"weight key {key!r} does not name a candidate of this message")
            weights.setdefault(cid, {})[state_key] = array.numpy()
    clipping_norm = _get(config, CLIPPING_NORM, float) if CLIPPING_NORM in config else 0.0
    if not 0 <= clipping_norm < math.inf:
        raise ReportError(f"message field {CLIPPING_NORM!r}={clipping_norm!r} is invalid; use a finite number >= 0")
    return Instruction(
        kind=_get(config, "kind", str), round=_get(config, "round", int), seed=_get(config, "seed", int),
        privacy=privacy, device=_get(config, "device", str), settings=TrainingSettings.from_config(config),
        space=space, data=DataSpec.from_json(_get(config, "data", str)), candidates=tuple(candidates),
        surrogates=surrogates, weights=weights, clipping_norm=clipping_norm,
    )


# --------------------------------------------------------------------- replies
@dataclass(frozen=True)
class CandidateReport:
    """Measurements of one candidate on one client (accuracy fraction, times in ms or s, sample counts)."""

    id: str
    accuracy: float
    loss: float
    latency_ms: float
    latency_p10_ms: float
    latency_p90_ms: float
    latency_cv: float
    latency_stable: float
    pred_accuracy: float
    pred_latency_ms: float
    num_train: float
    num_eval: float
    train_s: float
    measure_s: float
    mia_auc: float | None = None
    mia_auc_finetuned: float | None = None


@dataclass(frozen=True)
class Reply:
    """A decoded client reply; ``metrics`` maps candidate id to raw field values (not yet validated)."""

    device: str
    candidate_ids: tuple[str, ...]
    metrics: Mapping[str, Mapping[str, float]]
    num_examples: float
    weights: Mapping[str, Mapping[str, Array]] | None


def encode_reply(
    kind: str, device: str, reports: Sequence[CandidateReport],
    weights: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> RecordDict:
    """Return the reply ``RecordDict``; ``weights`` only in the ``weights`` privacy mode."""
    eval_key = EVAL_KEY[kind]
    metrics = MetricRecord()
    for report in reports:
        for name in REPORT_FIELDS:
            wire = eval_key if name == "num_eval" else name
            metrics[f"{report.id}.{wire}"] = float(getattr(report, name))
        for name in AUDIT_FIELDS if kind == "evaluate" else ():
            if getattr(report, name) is not None:
                metrics[f"{report.id}.{name}"] = float(getattr(report, name))
    metrics[NUM_EXAMPLES] = int(sum(r.num_train for r in reports)) if kind == "train" else int(
        sum(r.num_eval for r in reports)
    )
    info = ConfigRecord({"device": device, "candidates": json.dumps([r.id for r in reports])})
    content = RecordDict({METRICS: metrics, INFO: info})
    if weights is not None:
        arrays = ArrayRecord()
        for cid, state in weights.items():
            for key, value in state.items():
                arrays[f"{cid}/{key}"] = Array(np.asarray(value, order="C"))
        content[ARRAYS] = arrays
    return content


def decode_reply(content: RecordDict, kind: str) -> Reply:
    """Split a reply into per-candidate raw values; raise :class:`ReportError` on broken structure."""
    metrics = _record(content, METRICS, MetricRecord)
    info = _record(content, INFO, ConfigRecord)
    ids = _load_json(_get(info, "candidates", str), "candidates")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ReportError("reply field 'candidates' must be a JSON list of candidate ids")
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ReportError(f"reply lists candidate ids {repeated} more than once")
    if NUM_EXAMPLES not in metrics:
        raise ReportError(f"reply metrics lack {NUM_EXAMPLES!r}")
    wire_names = {EVAL_KEY[kind] if n == "num_eval" else n: n for n in REPORT_FIELDS}
    if kind == "evaluate":
        wire_names.update({n: n for n in AUDIT_FIELDS})
    grouped: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key == NUM_EXAMPLES:
            continue
        cid, _, wire = key.rpartition(".")
        if not cid or wire not in wire_names:
            raise ReportError(f"reply metric key {key!r} is not '<candidate id>.<field>' with a known field")
        if isinstance(value, (list, bool)):
            raise ReportError(f"reply metric {key!r} is a {type(value).__name__}; expected one number")
        grouped.setdefault(cid, {})[wire_names[wire]] = float(value)
    weights = None
    if ARRAYS in content.array_records:
        weights = {}
        for key, array in content.array_records[ARRAYS].items():
            cid, _, state_key = key.partition("/")
            weights.setdefault(cid, {})[state_key] = array
    return Reply(
        device=_get(info, "device", str), candidate_ids=tuple(ids), metrics=grouped,
        num_examples=float(metrics[NUM_EXAMPLES]), weights=weights,
    )


# ---------------------------------------------------------------------- query
QUERY_FIELDS = ("device", "partition-id", "num-train", "num-val", "num-test")


def encode_query_reply(device: str, partition_id: int, counts: Mapping[str, int]) -> RecordDict:
    """Return the reply to the query round: device profile name, partition id and split sizes."""
    return RecordDict(
        {INFO: ConfigRecord({"device": device, "partition-id": int(partition_id),
                             **{f"num-{k}": int(v) for k, v in counts.items()}})}
    )


def decode_query_reply(content: RecordDict) -> dict[str, Any]:
    """Return the query reply fields; raise :class:`ReportError` if one is missing or mistyped."""
    info = _record(content, INFO, ConfigRecord)
    result: dict[str, Any] = {"device": _get(info, "device", str)}
    for key in QUERY_FIELDS[1:]:
        result[key] = _get(info, key, int)
    return result


# --------------------------------------------------------------------- helpers
def payload_bytes(content: RecordDict) -> int:
    """Return the payload size of ``content`` in bytes: array data, config strings/bytes, 8 per number."""
    total = 0
    for record in content.array_records.values():
        total += sum(len(array.data) for array in record.values())
    for record in list(content.config_records.values()) + list(content.metric_records.values()):
        for key, value in record.items():
            total += len(key)
            if isinstance(value, (str, bytes)):
                total += len(value)
            elif isinstance(value, list):
                total += sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in value)
            else:
                total += 8
    return total


def _record(content: RecordDict, key: str, kind: type) -> Any:
    record = content.get(key)
    if not isinstance(record, kind):
        raise ReportError(f"message lacks the {kind.__name__} {key!r}")
    return record


def _get(record: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in record:
        raise ReportError(f"message field {key!r} is missing")
    value = record[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ReportError(f"message field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"message field {what!r} is not valid JSON: {error}") from None


def _require_int(value: Any, name: str, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ReportError(f"{name}={value!r} is invalid; use an integer >= {minimum}")
