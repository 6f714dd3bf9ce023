"""The federated NAS strategy: a Flower Message-API ``Strategy`` that drives the search.

:meth:`FederatedNasStrategy.start` runs, on a Flower ``Grid``:

1. a query round (``query`` messages): each node reports its hardware profile,
   partition id and private split sizes;
2. ``num_rounds`` search rounds. :meth:`configure_train` samples clients (seeded by
   ``(seed, round)``), requests each client's own candidates from the search strategy
   under its device's budgets and builds one fresh message per client;
   :meth:`aggregate_train` validates every reply, aggregates the reports per
   (device, arch), screens out implausible observations (:mod:`fl_server.outliers`),
   refits the accuracy and per-device latency corrections from the base surrogates on
   all kept observations so far, tells the search strategy, merges returned weights
   (``weights`` mode, optionally with differential privacy), logs the round and
   checkpoints;
3. the final step: recommendations per (device, budget), ONNX files, and an
   ``evaluate`` round in which clients score the recommendations on their test splits.

Everything the run produces is collected in :attr:`FederatedNasStrategy.history`, a
JSON-ready dict. Randomness comes only from ``seed`` and the round number, and
clients are keyed by partition id, so a resumed run (:meth:`restore`) continues
exactly where an uninterrupted one would be.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from nas.errors import ApfpError, CheckpointError
from nas.search import Objective, check_feasible, create_strategy
from nas.search.selection import DeviceTarget, select_round_candidates
from nas.space import Architecture
from fl_server.app import ServerSettings
from fl_server.checkpoint import load_checkpoint, save_checkpoint
from fl_server.dp import dp_masked_fedavg, privacy_record
from fl_server.messages import (
    LATENCY_PREFIX, Candidate, Instruction, encode_instruction, payload_bytes,
)
from fl_server.outliers import screen_observations, split_flagged
from fl_server.query import ClientInfo, client_order, query_clients
from fl_server.recommendations import calibration_split, export_models, merge_final_scores, recommend_all
from fl_server.report_aggregation import AggregatedReport, check_aggregated, resolve_report_aggregator
from fl_server.rounds import (
    client_seed, feasible_budgets, refit_surrogates, sample_clients, surrogate_quality,
)
from fl_server.validation import ClientResult, SentMessage, collect_replies, count_rejections
from fl_server.weight_aggregation import WeightUpdate, check_merged_state, resolve_weight_aggregator

logger = logging.getLogger(__name__)

HISTORY_FORMAT = 1


class FederatedNasStrategy(Strategy):
    """Federated, platform-aware architecture search over the nodes of a Flower ``Grid``."""

    def __init__(self, run: Any, settings: ServerSettings, *, report_aggregator: Any = None,
                 weight_aggregator: Any = None) -> None:
        self.run, self.settings, self.space, self.supernet = run, settings, run.space, run.supernet
        self.budgets = {k: list(v) for k, v in (settings.budgets or run.budgets).items()}
        unknown = sorted(set(self.budgets) - set(run.latency_predictors))
        if unknown:
            raise ApfpError(f"budgets name devices {unknown} without a latency surrogate; known: "
                            f"{sorted(run.latency_predictors)}")
        self.data = settings.data_spec(run.settings)
        self.report_aggregator = resolve_report_aggregator(report_aggregator or settings.report_aggregator)
        self.weight_aggregator = resolve_weight_aggregator(weight_aggregator or settings.weight_aggregator)
        self.search = create_strategy(settings.search_strategy, self.space, seed=settings.seed)
        self.accuracy, self.latency = run.accuracy_predictor, dict(run.latency_predictors)
        self.observations: list[AggregatedReport] = []
        self.flagged: list[dict[str, Any]] = []
        self._flagged_index: set[int] = set()
        self.dp = settings.dp()
        self.clients: dict[int, ClientInfo] = {}
        self.completed_rounds = 0
        self._sent: dict[int, SentMessage] = {}
        self._round: dict[str, Any] = {}
        self._final: dict[str, Any] = {}
        self.history: dict[str, Any] = {
            "format": "apfp-nas-federated-history", "format_version": HISTORY_FORMAT, "status": "running",
            "settings": settings.to_dict(), "space": {"fingerprint": self.space.fingerprint()},
            "data": self.data.__dict__, "budgets_ms": self.budgets, "rounds": [], "recommendations": [],
            "faults": settings.faults().to_dict(), "privacy": privacy_record(settings.privacy, self.dp, []),
        }

    # ------------------------------------------------------------ checkpointing
    def restore(self) -> bool:
        """Load the checkpoint in ``<output-dir>/checkpoint``; return False if there is none."""
        checkpoint = load_checkpoint(self.settings.output_dir / "checkpoint")
        if checkpoint is None:
            logger.warning("resume: no checkpoint in %s; starting from round 1", self.settings.output_dir)
            return False
        state = checkpoint.state
        for key, expected in (("space", self.space.fingerprint()), ("seed", self.settings.seed),
                              ("privacy", self.settings.privacy), ("search_strategy", self.settings.search_strategy)):
            if state.get(key) != expected:
                raise CheckpointError(f"checkpoint {checkpoint.path} has {key}={state.get(key)!r}, this run "
                                      f"{expected!r}; resume with the settings of the stopped run")
        self.observations = [AggregatedReport.from_dict(o) for o in state["observations"]]
        self.search.load_state_dict(state["search"])
        self.history = state["history"]
        self.history["status"] = "running"
        if checkpoint.supernet_state is not None:
            self.supernet.load_state_dict(checkpoint.supernet_state)
        self.completed_rounds = checkpoint.completed_round
        self._refit()
        logger.info("resumed from the checkpoint of round %d", self.completed_rounds)
        return True

    def _checkpoint(self) -> None:
        state = {
            "space": self.space.fingerprint(), "seed": self.settings.seed, "privacy": self.settings.privacy,
            "search_strategy": self.settings.search_strategy, "history": self.history,
            "observations": [o.to_dict() for o in self.observations], "search": self.search.state_dict(),
        }
        weights = self.supernet.state_dict() if self.settings.privacy == "weights" else None
        save_checkpoint(self.settings.output_dir / "checkpoint", self.completed_rounds, state, weights)

    # --------------------------------------------------------------- surrogates
    def _refit(self) -> None:
        flags = screen_observations(self.observations, self.run.accuracy_predictor, self.run.latency_predictors)
        kept, self.flagged = split_flagged(self.observations, flags)
        self._flagged_index = {flag.index for flag in flags}
        self.accuracy, self.latency = refit_surrogates(self.run.accuracy_predictor, self.run.latency_predictors, kept)

    def _kept_observations(self) -> list[AggregatedReport]:
        return [o for i, o in enumerate(self.observations) if i not in self._flagged_index]

    def _objective(self, device: str, budget_ms: float) -> Objective:
        return Objective.from_predictors(self.accuracy, self.latency[device], budget_ms, device,
                                         self.settings.uncertainty_weight)

    def _feasible_budgets(self, device: str) -> list[float]:
        _, fastest = check_feasible(self.space, self._objective(device, 1e12))
        return feasible_budgets(self.budgets[device], fastest, device)

    # ------------------------------------------------------------------- query
    def query_clients(self, grid: Grid, timeout: float) -> None:
        """Wait for ``min-clients`` nodes, then query each for its device, partition and split sizes."""
        self.clients = query_clients(grid, min_clients=self.settings.min_clients, data=self.data,
                                     resolution=self.space.resolution, devices=self.budgets, timeout=timeout)
        self.history["clients"] = [c.__dict__ for c in sorted(self.clients.values(), key=client_order)]

    # ------------------------------------------------------------------- train
    def _sample(self, server_round: int) -> list[ClientInfo]:
        ordered = sorted(self.clients.values(), key=client_order)
        return sample_clients(ordered, self.settings.clients_per_round, self.settings.seed, server_round)

    def _surrogate_texts(self, devices: Iterable[str]) -> dict[str, str]:
        texts = {"accuracy": self.accuracy.to_text()}
        texts.update({LATENCY_PREFIX + d: self.latency[d].to_text() for d in devices})
        return texts

    def _message(self, kind: str, client: ClientInfo, server_round: int, candidates: list[Candidate],
                 texts: dict[str, str]) -> tuple[Message, SentMessage]:
        sent = SentMessage(client.partition, client.device, {c.id: c.arch for c in candidates})
        weights = {}
        for candidate in candidates:
            state = {k: v.numpy() for k, v in self.supernet.subnet_state(candidate.arch).items()}
            weights[candidate.id] = state
            sent.arrays[candidate.id] = {k: (str(v.dtype), tuple(v.shape)) for k, v in state.items()}
        instruction = Instruction(
            kind=kind, round=server_round, seed=client_seed(self.settings.seed, server_round, client.partition),
            privacy=self.settings.privacy, device=client.device, settings=self.settings.training, space=self.space,
            data=self.data, candidates=tuple(candidates),
            surrogates={k: v for k, v in texts.items() if k == "accuracy" or k == LATENCY_PREFIX + client.device},
            weights=weights, clipping_norm=self.dp.clipping_norm if kind == "train" else 0.0,
        )
        message_type = MessageType.TRAIN if kind == "train" else MessageType.EVALUATE
        return Message(encode_instruction(instruction), dst_node_id=client.node_id, message_type=message_type,
                       group_id=f"{kind}-{server_round}"), sent

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Return one fresh train message per sampled client with its own candidates."""
        chosen = self._sample(server_round)
        devices = sorted({c.device for c in chosen})
        targets = {
            d: DeviceTarget(d, tuple(self._feasible_budgets(d)),
                            lambda archs, p=self.latency[d]: p.predict(list(archs)).mean)
            for d in devices
        }
        measured = {d: {o.arch for o in self.observations if o.device == d} for d in devices}

        def predict_accuracy(archs):
            prediction = self.accuracy.predict(list(archs))
            return prediction.mean, prediction.std

        proposals = select_round_candidates(
            self.search, self.space, targets, [(c.node_id, c.device) for c in chosen],
            self.settings.candidates_per_client, measured, predict_accuracy=predict_accuracy,
            uncertainty_weight=self.settings.uncertainty_weight,
        )
        texts = self._surrogate_texts(devices)
        messages, self._sent = [], {}
        self._round = {"round": server_round, "clients": [], "bytes_sent": 0}
        for client in chosen:
            picked = proposals.get(client.node_id, [])
            if not picked:
                logger.warning("round %d: no candidate left for node %d; it sits this round out",
                               server_round, client.node_id)
                continue
            candidates = [Candidate(f"c{i}", p.arch) for i, p in enumerate(picked)]
            message, sent = self._message("train", client, server_round, candidates, texts)
            messages.append(message)
            self._sent[client.node_id] = sent
            self._round["bytes_sent"] += payload_bytes(message.content)
            self._round["clients"].append({
                "node_id": client.node_id, "partition": client.partition, "device": client.device,
                "candidates": [{"id": c.id, **p.to_dict()} for c, p in zip(candidates, picked)],
            })
        return messages

    def aggregate_reports(self, results: list[ClientResult]) -> list[AggregatedReport]:
        """Turn the round's accepted results into observations; override to change the rule.

        The default calls the configured report aggregator (``report-aggregator``).
        """
        return self.report_aggregator(results)

    def aggregate_weights(self, updates: list[WeightUpdate]) -> dict[str, Any]:
        """Return the new supernet state dict from the round's updates; override to change the rule.

        The default calls the configured weight aggregator (``weight-aggregator``).
        """
        return self.weight_aggregator(self.supernet, updates)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, aggregate, correct the surrogates, tell the search, merge weights; see the module doc.

        Like Flower's strategies, a round aggregates whatever valid replies arrived. When
        the accepted reports come from fewer than ``min-train-nodes`` nodes, the round's
        update is skipped. Its observations are recorded in the round record, but the
        surrogates, the search state and the supernet keep their state. Observations of
        earlier rounds always stay.
        """
        results, rejections, received = collect_replies(replies, self._sent, "train", self.settings.privacy,
                                                        server_round)
        aggregated = check_aggregated(self.aggregate_reports(results), self.space, self.budgets)
        nodes = len({r.node_id for r in results})
        before = surrogate_quality(aggregated, self.accuracy, self.latency)
        self._round.update(
            accepted=len(results), rejected=len(rejections), rejections=[r.to_dict() for r in rejections],
            rejection_counts=count_rejections(rejections),
            nodes={"sent": len(self._sent), "accepted": nodes}, observations=[a.to_dict() for a in aggregated],
            bytes_received=received, surrogate_quality={"before": before, "after": before},
            client_time_s={"train": sum(r.report.train_s for r in results),
                           "measure": sum(r.report.measure_s for r in results)},
        )
        metrics = MetricRecord({"accepted": len(results), "rejected": len(rejections),
                                "observations": len(aggregated)})
        if nodes < self.settings.min_train_nodes:
            logger.warning("round %d: accepted reports from %d of %d nodes, fewer than min-train-nodes=%d; the "
                           "round's update is skipped and the observations of earlier rounds are kept", server_round,
                           nodes, len(self._sent), self.settings.min_train_nodes)
            self._round["update"] = "skipped"
            return None, metrics
        self._round["update"] = "applied"
        offset = len(self.observations)
        self.observations.extend(aggregated)
        self._refit()
        self._round["surrogate_quality"]["after"] = surrogate_quality(aggregated, self.accuracy, self.latency)
        self._round["outliers"] = self.flagged
        told = [a for i, a in enumerate(aggregated) if offset + i not in self._flagged_index]
        self.search.tell([a.to_observation() for a in told])
        arrays = None
        if self.settings.privacy == "weights" and results:
            arrays = self._merge_weights(results)
        return arrays, metrics

    def _merge_weights(self, results: list[ClientResult]) -> ArrayRecord:
        updates = [WeightUpdate(r.arch, r.weights, r.report.num_train, r.node_id) for r in results]
        if self.dp.enabled:
            merged, self._round["dp"] = dp_masked_fedavg(self.supernet, updates, self.dp, len(self._sent))
            source = "dp-masked-fedavg"
        else:
            merged, source = self.aggregate_weights(updates), self.settings.weight_aggregator
        check_merged_state(self.supernet, merged, source)
        self.supernet.load_state_dict(merged)
        return ArrayRecord(self.supernet.state_dict())

    # ---------------------------------------------------------------- evaluate
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Send every client the recommendations for its device (one candidate per distinct arch)."""
        rows = self.history["recommendations"]
        texts = self._surrogate_texts(sorted({c.device for c in self.clients.values()}))
        messages, self._sent, self._final = [], {}, {"bytes_sent": 0}
        for client in sorted(self.clients.values(), key=client_order):
            archs = list(dict.fromkeys(Architecture.from_dict(r["arch"]) for r in rows
                                       if r["device"] == client.device and r.get("arch") is not None))
            if not archs:
                continue
            candidates = [Candidate(f"r{i}", arch) for i, arch in enumerate(archs)]
            message, self._sent[client.node_id] = self._message("evaluate", client, server_round, candidates, texts)
            self._final["bytes_sent"] += payload_bytes(message.content)
            messages.append(message)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Join the clients' test-split scores into the recommendation table."""
        results, rejections, received = collect_replies(replies, self._sent, "evaluate", self.settings.privacy)
        merge_final_scores(self.history["recommendations"], results, self.run.profiles)
        self._final.update(bytes_received=received, accepted=len(results), rejected=len(rejections),
                           rejections=[r.to_dict() for r in rejections], rejection_counts=count_rejections(rejections))
        return MetricRecord({"accepted": len(results), "rejected": len(rejections)})

    def summary(self) -> None:
        """Log the configuration of the search."""
        s = self.settings
        logger.info("FederatedNasStrategy: %d rounds, privacy %s, %s candidates per client, search %s, seed %d",
                    s.num_rounds, s.privacy, s.candidates_per_client, s.search_strategy, s.seed)
        logger.info("devices and budgets (ms): %s", {k: [round(b, 4) for b in v] for k, v in self.budgets.items()})
        if s.failure_rate > 0:
            logger.warning("failure injection is on: failure-rate %g, failure-modes %s", s.failure_rate, s.failure_modes)
        if self.dp.enabled:
            logger.info("differential privacy on the weight path: clipping norm %g, noise multiplier %g",
                        self.dp.clipping_norm, self.dp.noise_multiplier)

    # -------------------------------------------------------------------- loop
    def start(self, grid: Grid, initial_arrays: ArrayRecord | None = None, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None, evaluate_fn: Any = None) -> Result:
        """Run the query round, the remaining search rounds and the final evaluation; see the module doc.

        ``initial_arrays``, ``train_config``, ``evaluate_config`` and ``evaluate_fn`` of
        the base signature are not used: the supernet comes from the run directory.
        """
        started = time.perf_counter()
        result = Result()
        self.summary()
        self.query_clients(grid, timeout)
        for server_round in range(self.completed_rounds + 1, num_rounds + 1):
            self._run_round(grid, server_round, timeout, result)
            stop = self.settings.stop_after_round
            if stop and server_round == stop and server_round < num_rounds:
                self.history["status"] = "stopped"
                logger.info("stopped after round %d (stop-after-round); continue with resume=true", server_round)
                return result
        self._finish(grid, num_rounds, timeout)
        self.history["status"] = "completed"
        self.history["duration_s"] = time.perf_counter() - started
        if self.settings.privacy == "weights":
            result.arrays = ArrayRecord(self.supernet.state_dict())
        return result

    def _finish(self, grid: Grid, num_rounds: int, timeout: float) -> None:
        """Build the recommendation table, export it to ONNX and let the clients score it."""
        tick = time.perf_counter()
        devices = sorted({c.device for c in self.clients.values()})
        self.history["recommendations"] = recommend_all(
            self.space, {d: self.budgets[d] for d in devices}, [o.to_observation() for o in self._kept_observations()],
            self._objective, self.settings.recommend_margin)
        recommended = time.perf_counter()
        if self.settings.export_onnx:
            calibration = calibration_split(self.run.settings, self.space.resolution)
            export_models(self.history["recommendations"], self.supernet, self.settings.output_dir, calibration,
                          self.settings.training.bn_batches)
        exported = time.perf_counter()
        messages = list(self.configure_evaluate(num_rounds, ArrayRecord(), ConfigRecord(), grid))
        configured = time.perf_counter()
        replies = grid.send_and_receive(messages, timeout=timeout)
        received = time.perf_counter()
        self.aggregate_evaluate(num_rounds, replies)
        self._final["timings_s"] = {
            "recommend": recommended - tick, "export": exported - recommended, "configure": configured - exported,
            "wait": received - configured, "total": time.perf_counter() - tick,
        }
        self.history["final_evaluation"] = self._final

    def _run_round(self, grid: Grid, server_round: int, timeout: float, result: Result) -> None:
        logger.info("[ROUND %d/%d]", server_round, self.settings.num_rounds)
        tick = time.perf_counter()
        messages = list(self.configure_train(server_round, ArrayRecord(), ConfigRecord(), grid))
        configured = time.perf_counter()
        replies = grid.send_and_receive(messages, timeout=timeout)
        received = time.perf_counter()
        _, metrics = self.aggregate_train(server_round, replies)
        aggregated = time.perf_counter()
        self.completed_rounds = server_round
        self._round["timings_s"] = {"configure": configured - tick, "wait": received - configured,
                                    "aggregate": aggregated - received, "total": aggregated - tick}
        self.history["rounds"].append(self._round)
        self.history["privacy"] = privacy_record(self.settings.privacy, self.dp, self.history["rounds"])
        self._checkpoint()
        self._round["timings_s"]["checkpoint"] = time.perf_counter() - aggregated
        if metrics is not None:
            result.train_metrics_clientapp[server_round] = metrics
        counts = self._round["rejection_counts"]
        logger.info("round %d: %d reports accepted, %d rejected%s, update %s, %.1f s", server_round,
                    self._round["accepted"], self._round["rejected"], f" {counts}" if counts else "",
                    self._round["update"], self._round["timings_s"]["total"])

