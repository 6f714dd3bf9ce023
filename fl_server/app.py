"""The Flower ``ServerApp`` of APFP-NAS and the run-config settings it reads.

Every setting comes from the run config (``[tool.flwr.app.config]`` in
``pyproject.toml``, overridden with ``flwr run --run-config``); see
:class:`ServerSettings` for the keys. The app loads the stage-1 run directory,
builds :class:`~fl_server.strategy.FederatedNasStrategy` (restoring the checkpoint
when ``resume`` is true), runs it, and writes ``history.json`` and the report to
``output-dir``. Relative paths are resolved against the working directory of the
process that runs the ServerApp (the SuperLink's), so pass absolute paths.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from nas.errors import ApfpError
from nas.search import available_strategies
from nas.search.recommend import DEFAULT_LATENCY_MARGIN
from fl_client.faults import FAILURE_MODES, FaultSettings
from fl_server.dp import DpSettings
from fl_server.messages import PRIVACY_MODES, DataSpec, TrainingSettings
from fl_server.report_aggregation import BUILTIN_REPORT_AGGREGATORS
from fl_server.weight_aggregation import BUILTIN_WEIGHT_AGGREGATORS

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.json"
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class ServerSettings:
    """Settings of one federated search, from the run config (keys in parentheses).

    run_dir (``run-dir``): stage-1 run directory. output_dir (``output-dir``):
    where the checkpoint, ONNX files, history and report go. num_rounds
    (``num-rounds``); stop_after_round (``stop-after-round``, 0: never) ends the run
    after that round's checkpoint so it can be resumed (``resume``). seed (``seed``)
    fixes client sampling, candidate selection and every client's training seed.
    privacy (``privacy``): ``metrics`` or ``weights``. min_clients (``min-clients``)
    nodes must reply to the query round; clients_per_round (``clients-per-round``, 0:
    all) are sampled each round and get candidates_per_client
    (``candidates-per-client``) candidates. budgets (``budgets``, JSON object
    ``{"<profile>": [ms, ...]}``) replaces the run directory's budgets.
    min_train_nodes (``min-train-nodes``): a search round whose accepted reports come
    from fewer nodes skips its update (see :meth:`FederatedNasStrategy.aggregate_train`).
    failure_rate and failure_modes (``failure-rate``, ``failure-modes``) inject client
    failures (:mod:`fl_client.faults`). dp_clipping_norm and dp_noise_multiplier
    (``dp-clipping-norm``, ``dp-noise-multiplier``) turn on central differential privacy
    on the weight path of the ``weights`` mode (:mod:`fl_server.dp`).
    recommend_margin (``recommend-margin``): safety margin of the recommendations, a
    fraction of the measured latency (:func:`nas.search.recommend.recommend`).
    """

    run_dir: Path
    output_dir: Path
    num_rounds: int = 3
    stop_after_round: int = 0
    resume: bool = False
    seed: int = 0
    privacy: str = "metrics"
    min_clients: int = 2
    clients_per_round: int = 0
    candidates_per_client: int = 2
    search_strategy: str = "annealing"
    uncertainty_weight: float = 0.5
    training: TrainingSettings = field(default_factory=TrainingSettings)
    dataset: str = ""
    data_root: str = ""
    private_fraction: float = -1.0
    partition: str = "dirichlet"
    alpha: float = 0.5
    partition_seed: int = 0
    report_aggregator: str = "weighted-median"
    weight_aggregator: str = "masked-fedavg"
    budgets: Mapping[str, tuple[float, ...]] | None = None
    round_timeout_s: float = 3600.0
    export_onnx: bool = True
    min_train_nodes: int = 1
    failure_rate: float = 0.0
    failure_modes: str = ",".join(FAILURE_MODES)
    dp_clipping_norm: float = 0.0
    dp_noise_multiplier: float = 0.0
    recommend_margin: float = DEFAULT_LATENCY_MARGIN

    def __post_init__(self) -> None:
        for name, minimum in (("num_rounds", 1), ("stop_after_round", 0), ("seed", 0), ("min_clients", 1),
                              ("clients_per_round", 0), ("candidates_per_client", 1), ("partition_seed", 0),
                              ("min_train_nodes", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                key = name.replace("_", "-")
                raise ApfpError(f"run config {key}={value!r} is invalid; use an integer >= {minimum}")
        if not 0.0 <= self.recommend_margin < 1.0:
            raise ApfpError(f"run config recommend-margin={self.recommend_margin!r} is invalid; use a fraction in "
                            "[0, 1), e.g. 0.1")
        if self.privacy not in PRIVACY_MODES:
            raise ApfpError(f"run config privacy={self.privacy!r} is invalid; allowed values: {PRIVACY_MODES}")
        if not math.isfinite(self.round_timeout_s) or self.round_timeout_s <= 0:
            raise ApfpError(f"run config round-timeout={self.round_timeout_s!r} is invalid; use seconds > 0")
        self.faults()
        if self.search_strategy not in available_strategies():
            raise ApfpError(f"run config search-strategy={self.search_strategy!r} is unknown; available: "
                            f"{available_strategies()}")
        for key, value, builtin in (("report-aggregator", self.report_aggregator, BUILTIN_REPORT_AGGREGATORS),
                                    ("weight-aggregator", self.weight_aggregator, BUILTIN_WEIGHT_AGGREGATORS)):
            if value and ":" not in value and value not in builtin:
                raise ApfpError(f"run config {key}={value!r} is unknown; built-in names: {sorted(builtin)}, or give "
                                "'package.module:name'")
        if self.dp().enabled and self.privacy != "weights":
            raise ApfpError(f"run config dp-clipping-norm={self.dp_clipping_norm!r} protects the weight path only; "
                            "set privacy='weights', or dp-clipping-norm=0 in the metrics mode")
        if self.dp().enabled and self.weight_aggregator not in ("", "masked-fedavg"):
            raise ApfpError(f"run config weight-aggregator={self.weight_aggregator!r} cannot be combined with "
                            "dp-clipping-norm > 0, which uses its own aggregation; remove one of the two")

    def faults(self) -> FaultSettings:
        """Return the failure-injection settings the ClientApps of this run apply."""
        modes = tuple(m.strip() for m in self.failure_modes.split(",") if m.strip())
        return FaultSettings(self.failure_rate, modes, self.seed, self.round_timeout_s)

    def dp(self) -> DpSettings:
        """Return the differential-privacy settings of the weight path."""
        return DpSettings(self.dp_clipping_norm, self.dp_noise_multiplier)

    @classmethod
    def from_run_config(cls, config: Mapping[str, Any]) -> "ServerSettings":
        """Parse Flower's run config; unknown values raise :class:`ApfpError` naming the key."""
        def get(key: str, default: Any) -> Any:
            value = config.get(key, default)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, type(default)):
                raise ApfpError(f"run config {key}={value!r} must be {type(default).__name__}, like its default "
                                f"{default!r}")
            return value

        if not str(config.get("run-dir", "")):
            raise ApfpError("run config run-dir is empty; set it to a directory written by `apfp-nas pretrain`")
        return cls(
            run_dir=Path(str(config["run-dir"])).resolve(),
            output_dir=Path(str(get("output-dir", "runs/federated"))).resolve(),
            num_rounds=get("num-rounds", 3), stop_after_round=get("stop-after-round", 0),
            resume=get("resume", False), seed=get("seed", 0), privacy=get("privacy", "metrics"),
            min_clients=get("min-clients", 2), clients_per_round=get("clients-per-round", 0),
            candidates_per_client=get("candidates-per-client", 2),
            search_strategy=get("search-strategy", "annealing"), uncertainty_weight=get("uncertainty-weight", 0.5),
            training=TrainingSettings(
                finetune_epochs=get("finetune-epochs", 1), lr=get("lr", 0.01), batch_size=get("batch-size", 32),
                bn_batches=get("bn-batches", 4), max_steps=get("max-steps", 0),
            ),
            dataset=get("dataset", ""), data_root=get("data-root", ""),
            private_fraction=get("private-fraction", -1.0), partition=get("partition", "dirichlet"),
            alpha=get("alpha", 0.5), partition_seed=get("partition-seed", 0),
            report_aggregator=get("report-aggregator", "weighted-median"),
            weight_aggregator=get("weight-aggregator", "masked-fedavg"),
            budgets=parse_budgets(get("budgets", "")), round_timeout_s=get("round-timeout", 3600.0),
            export_onnx=get("export-onnx", True), min_train_nodes=get("min-train-nodes", 1),
            failure_rate=get("failure-rate", 0.0), failure_modes=get("failure-modes", ",".join(FAILURE_MODES)),
            dp_clipping_norm=get("dp-clipping-norm", 0.0), dp_noise_multiplier=get("dp-noise-multiplier", 0.0),
            recommend_margin=get("recommend-margin", DEFAULT_LATENCY_MARGIN),
        )

    def data_spec(self, run_settings: Mapping[str, Any]) -> DataSpec:
        """Return the clients' data spec: by default the private part of the run directory's dataset."""
        run_dataset = str(run_settings.get("dataset", ""))
        dataset = self.dataset or run_dataset
        if not dataset:
            raise ApfpError("no dataset: set run config dataset, or use a run directory that records one")
        fraction = self.private_fraction
        if fraction < 0:
            fraction = float(run_settings.get("private_fraction", 0.0)) if dataset == run_dataset else 0.0
        return DataSpec(
            dataset=dataset, data_root=self.data_root or str(run_settings.get("data_root") or ""),
            private_fraction=fraction, split_seed=int(run_settings.get("seed", 0)), scheme=self.partition,
            alpha=self.alpha, partition_seed=self.partition_seed,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"], data["output_dir"] = str(self.run_dir), str(self.output_dir)
        data["budgets"] = None if self.budgets is None else {k: list(v) for k, v in self.budgets.items()}
        return data


def parse_budgets(text: str) -> dict[str, tuple[float, ...]] | None:
    """Parse the ``budgets`` run-config value: JSON ``{"<profile>": [ms, ...]}``, or "" for none."""
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ApfpError(f"run config budgets={text!r} is not JSON: {error}") from None
    if not isinstance(data, dict) or not data:
        raise ApfpError('run config budgets must be a JSON object such as {"cpu-1t-fp32": [2.0, 4.0]}')
    result = {}
    for name, values in data.items():
        values = values if isinstance(values, list) else [values]
        if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
            raise ApfpError(f"run config budgets for {name!r} must be positive numbers of ms, got {values!r}")
        result[str(name)] = tuple(sorted(float(v) for v in values))
    return result


def write_outputs(history: Mapping[str, Any], output_dir: Path) -> Path:
    """Write ``history.json`` and the report; return the report path.

    The report (``report.json`` and plots) is written by :func:`fl_server.report.write_report`.
    """
    from fl_server.checkpoint import jsonable
    from fl_server.run_dir import atomic_write_text

    output_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(history), indent=1, sort_keys=True)
    atomic_write_text(output_dir / HISTORY_FILE, text)
    from fl_server.report import write_report

    return Path(write_report(jsonable(history), output_dir))


def configure_logging(level: int = logging.INFO) -> None:
    """Send this project's log records to stderr, which Flower streams to ``flwr run --stream``.

    Does nothing when the root logger already has handlers, because then the host
    process (a test runner, or an application embedding the app) decides where
    records go and at which level.
    """
    if logging.getLogger().handlers:
        return
    for name in ("fl_server", "fl_client", "nas", "surrogate", "hw_profiles"):
        log = logging.getLogger(name)
        if not log.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            log.addHandler(handler)
            log.setLevel(level)


def build_server_app(strategy_class: type | None = None) -> ServerApp:
    """Return a ``ServerApp`` that runs ``strategy_class`` (default: ``FederatedNasStrategy``).

    A researcher who subclasses the strategy (for example to override
    ``aggregate_reports`` or ``aggregate_weights``) builds an app with it and points
    ``[tool.flwr.app.components] serverapp`` at that app.
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        from fl_server.run_dir import RunDirectory
        from fl_server.strategy import FederatedNasStrategy

        configure_logging()
        settings = ServerSettings.from_run_config(context.run_config)
        logger.info("APFP-NAS federated search: run directory %s, output %s", settings.run_dir, settings.output_dir)
        run = RunDirectory.load(settings.run_dir)
        strategy = (strategy_class or FederatedNasStrategy)(run, settings)
        if settings.resume:
            strategy.restore()
        strategy.start(grid, num_rounds=settings.num_rounds, timeout=settings.round_timeout_s)
        report = write_outputs(strategy.history, settings.output_dir)
        logger.info("history and report written; report: %s", report)

    return server_app


app = build_server_app()
