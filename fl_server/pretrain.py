"""Stage 1: server pretraining on public data (``apfp-nas pretrain``).

The calculation centre does the expensive work once:

1. train the elastic supernet on the public part of a dataset (sandwich rule);
2. sample subnets, recalibrate their BatchNorm statistics and measure their
   accuracy on held-out public data;
3. export sampled subnets to ONNX and measure their latency under each hardware
   profile (real ONNX Runtime timings on this host);
4. fit the LightGBM surrogates and report their held-out quality beside baselines;
5. resolve each profile's latency budgets and search the best architecture per
   (profile, budget) with the surrogates;
6. save everything in a :class:`~fl_server.run_dir.RunDirectory`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from surrogate.quality import fit_accuracy_surrogate, fit_latency_surrogate
from fl_server.plots import plot_pretrain
from fl_server.run_dir import RunDirectory
from hw_profiles import HardwareProfile, load_profile, measure_latency, resolve_budgets
from nas.data import ArraySplit, load_dataset
from nas.data.holdout import split_public_private
from nas.evaluate import evaluate_subnets
from nas.export import export_onnx
from nas.progress import progress
from nas.search import Objective, check_feasible, create_strategy, get_strategy
from nas.space import Architecture, SearchSpace
from nas.supernet import ElasticSupernet
from nas.train import train_supernet

log = logging.getLogger(__name__)

_FLAGS = {
    "epochs": "--epochs",
    "num_accuracy_samples": "--accuracy-samples",
    "num_latency_samples": "--latency-samples",
    "batch_size": "batch size",
    "bn_batches": "BN recalibration batches",
}

DEFAULT_PROFILES = ("cpu-1t-fp32", "cpu-2t-fp32", "cpu-1t-fp32-noopt")


@dataclass
class PretrainConfig:
    """Settings of stage 1. The defaults keep a 2-core CPU run of ``digits`` to a few minutes.

    ``resolution`` is the input size in pixels of every model (None: 16 for ``digits``,
    whose 8x8 images are upsampled, else the dataset's own size). ``private_fraction``
    of every split is held back for the clients and never seen in stage 1.
    """

    dataset: str = "digits"
    data_root: str | None = None
    resolution: int | None = None
    private_fraction: float = 0.5
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    num_accuracy_samples: int = 200
    num_latency_samples: int = 100
    bn_batches: int = 4
    profiles: tuple[str, ...] = DEFAULT_PROFILES
    search_strategy: str = "annealing"
    search_evaluations: int = 600
    seed: int = 0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "num_accuracy_samples", "num_latency_samples", "bn_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} ({_FLAGS.get(name, 'setting')})={value!r} is invalid; use a positive integer")
        for name in ("num_accuracy_samples", "num_latency_samples"):
            if getattr(self, name) < 10:
                raise ValueError(
                    f"{name} ({_FLAGS[name]})={getattr(self, name)} is too small; use >= 10 so the "
                    "surrogate has held-out samples to be scored on"
                )
        if not 0.0 <= self.private_fraction < 1.0:
            raise ValueError(f"private_fraction={self.private_fraction} is invalid; use a value in [0, 1)")
        if not self.profiles:
            raise ValueError("profiles (--profiles) is empty; name at least one hardware profile, e.g. cpu-1t-fp32")
        self.profiles = tuple(self.profiles)


def default_resolution(dataset: str, native: int) -> int:
    """Return the model input size for ``dataset``: 8x8 digits are upsampled to 16 pixels."""
    return 16 if dataset == "digits" else native


def sample_distinct(space: SearchSpace, count: int, rng: np.random.Generator) -> list[Architecture]:
    """Return ``count`` distinct architectures: the smallest, the largest, then random draws."""
    archs = [space.smallest(), space.largest()]
    seen = set(archs)
    attempts = 0
    while len(archs) < count and attempts < count * 100:
        attempts += 1
        arch = space.sample(rng)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs[:count]


def measure_space_latency(
    supernet: ElasticSupernet,
    archs: Sequence[Architecture],
    profiles: Sequence[HardwareProfile],
    *,
    show_progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Export every architecture once and time it under every profile (ms, real runs)."""
    space = supernet.space
    samples: dict[str, list[dict[str, Any]]] = {p.name: [] for p in profiles}
    input_shape = (space.in_channels, space.resolution, space.resolution)
    for arch in progress(archs, desc="latency", enabled=show_progress):
        model_bytes = export_onnx(supernet.extract_subnet(arch), input_shape=input_shape)
        for profile in profiles:
            measurement = measure_latency(model_bytes, profile)
            record = {"arch": arch.to_dict(), **measurement.to_dict()}
            samples[profile.name].append(record)
    return samples


def pretrain(output_dir: str | Path, config: PretrainConfig | None = None) -> RunDirectory:
    """Run stage 1 and write the run directory at ``output_dir``; return it loaded."""
    config = config or PretrainConfig()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    # Profiles are loaded first so that a bad name fails before minutes of training.
    profiles = {profile.name: profile for profile in (load_profile(name) for name in config.profiles)}

    # 1. Public data and the space that fits it.
    splits = load_dataset(config.dataset, root=config.data_root, seed=config.seed)
    public = split_public_private(splits, "public", private_fraction=config.private_fraction, seed=config.seed)
    resolution = config.resolution or default_resolution(config.dataset, public.resolution)
    public = public.resized(resolution)
    space = SearchSpace.for_task(public.in_channels, public.num_classes, resolution)
    log.info(
        "Stage 1 on %s: %d train / %d val samples, space %s with %.2e architectures",
        config.dataset, len(public.train), len(public.val), space.fingerprint(), space.size(),
    )

    # 2. Supernet training.
    tick = time.perf_counter()
    supernet = ElasticSupernet(space)
    history = train_supernet(
        supernet,
        public.train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        progress=config.progress,
        val=public.val,
    )
    timings["supernet_training_s"] = time.perf_counter() - tick

    # 3. Accuracy of sampled subnets (BN recalibrated), on held-out public data.
    tick = time.perf_counter()
    accuracy_archs = sample_distinct(space, config.num_accuracy_samples, rng)
    # Stage 1 has no use for a public test split, so val and test together give the
    # subnet accuracies a finer resolution (one sample is 1/len(held_out) of accuracy).
    held_out = ArraySplit(np.concatenate([public.val.x, public.test.x]), np.concatenate([public.val.y, public.test.y]))
    results = evaluate_subnets(
        supernet, accuracy_archs, public.train, held_out, bn_batches=config.bn_batches, progress=config.progress
    )
    accuracy_samples = [
        {"arch": arch.to_dict(), **result.to_dict()} for arch, result in zip(accuracy_archs, results)
    ]
    timings["accuracy_sampling_s"] = time.perf_counter() - tick

    # 4. Latency of sampled subnets under each profile.
    tick = time.perf_counter()
    latency_archs = sample_distinct(space, config.num_latency_samples, rng)
    latency_samples = measure_space_latency(supernet, latency_archs, list(profiles.values()), show_progress=config.progress)
    timings["latency_measurement_s"] = time.perf_counter() - tick

    # 5. Surrogates with held-out quality.
    tick = time.perf_counter()
    accuracy_values = np.array([r.accuracy for r in results])
    accuracy_predictor, accuracy_quality = fit_accuracy_surrogate(space, accuracy_archs, accuracy_values, seed=config.seed)
    latency_predictors, latency_quality, budgets = {}, {}, {}
    for name, samples in latency_samples.items():
        values = np.array([s["median_ms"] for s in samples])
        latency_predictors[name], latency_quality[name] = fit_latency_surrogate(
            space, latency_archs, values, name, seed=config.seed
        )
        budgets[name] = resolve_budgets(profiles[name], values)
    timings["surrogate_fitting_s"] = time.perf_counter() - tick

    # 6. Best architecture per (profile, budget) by the surrogates.
    tick = time.perf_counter()
    best = search_best_per_budget(
        space, accuracy_predictor, latency_predictors, budgets, config.search_strategy, config.search_evaluations, config.seed
    )
    timings["search_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started

    report = {
        "stage": "pretrain",
        "config": asdict(config),
        "space": {"fingerprint": space.fingerprint(), "size": space.size(), "definition": space.to_dict()},
        "public_data": {"train": len(public.train), "held_out": len(held_out), "resolution": resolution},
        "supernet_history": history,
        "surrogates": {"accuracy": accuracy_quality, "latency": latency_quality},
        "budgets_ms": budgets,
        "best_by_surrogate": best,
        "timings_s": timings,
    }
    run = RunDirectory(
        path=Path(output_dir),
        space=space,
        supernet=supernet,
        accuracy_predictor=accuracy_predictor,
        latency_predictors=latency_predictors,
        profiles=profiles,
        budgets=budgets,
        public_dataset=config.dataset,
        settings={
            "dataset": config.dataset,
            "data_root": config.data_root,
            "resolution": resolution,
            "private_fraction": config.private_fraction,
            "seed": config.seed,
        },
        accuracy_samples=accuracy_samples,
        latency_samples=latency_samples,
        report=report,
    )
    run.save()
    plot_pretrain(report, run.path / "plots")
    return run


def search_best_per_budget(
    space: SearchSpace,
    accuracy_predictor: Any,
    latency_predictors: dict[str, Any],
    budgets: dict[str, list[float]],
    strategy_name: str,
    evaluations: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Search the surrogate-best architecture for every (profile, budget in ms)."""
    rows = []
    for profile, profile_budgets in sorted(budgets.items()):
        # Candidates found under a smaller budget also fit every larger one, so they
        # stay in the pool: a larger budget never gets a worse pick than a smaller one.
        pool: list[Architecture] = []
        for budget in sorted(profile_budgets):
            objective = Objective.from_predictors(
                accuracy_predictor, latency_predictors[profile], budget, profile, uncertainty_weight=0.0
            )
            check_feasible(space, objective)
            params = get_strategy(strategy_name).params_for_evaluations(evaluations)
            strategy = create_strategy(strategy_name, space, seed=seed, **params)
            pool.extend(a for a in strategy.ask(5, objective) if a not in pool)
            latency = objective.predict_latency(pool)
            candidates = [a for a, ms in zip(pool, latency) if ms <= budget]
            mean, std = objective.predict_accuracy(candidates)
            latency = objective.predict_latency(candidates)
            best = int(np.argmax(mean))
            rows.append(
                {
                    "profile": profile,
                    "budget_ms": float(budget),
                    "arch": candidates[best].to_dict(),
                    "predicted_accuracy": float(mean[best]),
                    "predicted_accuracy_std": float(std[best]),
                    "predicted_latency_ms": float(latency[best]),
                }
            )
    return rows
