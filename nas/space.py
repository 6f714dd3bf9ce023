"""MobileNetV3-style elastic search space and the architectures it contains.

The space follows Once-for-All: a stem convolution, then stages of inverted
residual (MBConv) blocks, then a 1x1 head convolution, global average pooling and
a linear classifier. Every stage has an elastic depth; every block has an elastic
kernel size and expand ratio. Stage widths, strides, squeeze-and-excitation and
activation are fixed per stage and are plain data (:class:`StageConfig`).

An :class:`Architecture` stores only the settings of active blocks, so two
architectures that differ only in blocks that do not run are the same object
(canonical form). The fixed-length integer encoding pads inactive blocks with 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from nas.errors import InvalidArchitectureError

ACTIVATIONS = ("relu", "hswish")


def conv_output_size(size: int, stride: int) -> int:
    """Return the spatial size after a 'same'-padded convolution with ``stride``."""
    return (size - 1) // stride + 1


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below it or 10% under."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def se_channels(mid_channels: int) -> int:
    """Return the squeeze width of the SE module of a block with ``mid_channels``."""
    return make_divisible(mid_channels // 4, 8)


@dataclass(frozen=True)
class StageConfig:
    """Fixed settings of one stage: output width, stride of its first block, SE, activation."""

    width: int
    stride: int
    use_se: bool = False
    activation: str = "relu"

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or self.width < 1:
            raise InvalidArchitectureError(f"stage width={self.width!r} is invalid; use a positive int")
        if self.stride not in (1, 2):
            raise InvalidArchitectureError(f"stage stride={self.stride!r} is invalid; allowed values: (1, 2)")
        if self.activation not in ACTIVATIONS:
            raise InvalidArchitectureError(
                f"stage activation={self.activation!r} is invalid; allowed values: {ACTIVATIONS}"
            )


@dataclass(frozen=True)
class BlockSpec:
    """Shape of one active MBConv block of an architecture (all sizes in channels or pixels)."""

    stage: int
    index: int
    in_channels: int
    out_channels: int
    mid_channels: int
    stride: int
    kernel: int
    expand: int
    use_se: bool
    se_channels: int
    activation: str
    in_resolution: int
    out_resolution: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class Architecture:
    """One subnet of a :class:`SearchSpace`: stage depths and per-block kernel and expand.

    ``kernels[s]`` and ``expands[s]`` hold exactly ``depths[s]`` values, one per active
    block of stage ``s``. The object is immutable and hashable; validate it against a
    space with :meth:`SearchSpace.validate`.
    """

    depths: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    expands: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        try:
            depths = tuple(int(d) for d in self.depths)
            kernels = tuple(tuple(int(k) for k in stage) for stage in self.kernels)
            expands = tuple(tuple(int(e) for e in stage) for stage in self.expands)
        except (TypeError, ValueError) as error:
            raise InvalidArchitectureError(
                f"architecture fields must be integer sequences: {error}"
            ) from error
        if not (len(depths) == len(kernels) == len(expands)):
            raise InvalidArchitectureError(
                f"depths, kernels and expands must have one entry per stage; got "
                f"{len(depths)}, {len(kernels)} and {len(expands)}"
            )
        for stage, depth in enumerate(depths):
            if len(kernels[stage]) != depth or len(expands[stage]) != depth:
                raise InvalidArchitectureError(
                    f"stage {stage} has depth={depth} but {len(kernels[stage])} kernels and "
                    f"{len(expands[stage])} expand ratios; give one per active block"
                )
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "kernels", kernels)
        object.__setattr__(self, "expands", expands)

    @property
    def num_blocks(self) -> int:
        return sum(self.depths)

    def blocks(self) -> Iterator[tuple[int, int, int, int]]:
        """Yield ``(stage, index, kernel, expand)`` for every active block in order."""
        for stage, depth in enumerate(self.depths):
            for index in range(depth):
                yield stage, index, self.kernels[stage][index], self.expands[stage][index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "depths": list(self.depths),
            "kernels": [list(k) for k in self.kernels],
            "expands": [list(e) for e in self.expands],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        if not isinstance(data, Mapping):
            raise InvalidArchitectureError(f"architecture must be a JSON object, got {type(data).__name__}")
        expected = {"depths", "kernels", "expands"}
        if set(data) != expected:
            raise InvalidArchitectureError(
                f"architecture keys {sorted(data)} are invalid; expected exactly {sorted(expected)}"
            )
        return cls(data["depths"], data["kernels"], data["expands"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Architecture":
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise InvalidArchitectureError(f"architecture JSON is invalid: {error}") from error
        return cls.from_dict(data)

    def __str__(self) -> str:
        stages = [
            f"{d}:" + ",".join(f"k{k}e{e}" for k, e in zip(ks, es))
            for d, ks, es in zip(self.depths, self.kernels, self.expands)
        ]
        return "[" + " | ".join(stages) + "]"


@dataclass(frozen=True)
class SearchSpace:
    """An elastic MobileNetV3-style space: fixed macro structure, elastic depth/kernel/expand.

    ``resolution`` is the input size in pixels that every model of the space takes
    (datasets are resized to it); ``in_channels`` and ``num_classes`` fix the stem
    input and classifier output.
    """

    in_channels: int
    num_classes: int
    resolution: int
    stages: tuple[StageConfig, ...]
    stem_width: int = 16
    stem_stride: int = 1
    head_width: int = 128
    depth_choices: tuple[int, ...] = (2, 3, 4)
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[int, ...] = (3, 4, 6)
    name: str = "mbv3"

    def __post_init__(self) -> None:
        stages = tuple(s if isinstance(s, StageConfig) else StageConfig(**s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        for field in ("depth_choices", "kernel_choices", "expand_choices"):
            values = tuple(int(v) for v in getattr(self, field))
            if not values or len(set(values)) != len(values) or list(values) != sorted(values):
                raise InvalidArchitectureError(
                    f"{field}={values!r} is invalid; use distinct positive ints in increasing order"
                )
            if values[0] < 1:
                raise InvalidArchitectureError(f"{field}={values!r} is invalid; values must be >= 1")
            object.__setattr__(self, field, values)
        if any(k % 2 == 0 for k in self.kernel_choices):
            raise InvalidArchitectureError(
                f"kernel_choices={self.kernel_choices!r} is invalid; kernel sizes must be odd"
            )
        if not stages:
            raise InvalidArchitectureError("stages is empty; a search space needs at least one stage")
        for field in ("in_channels", "num_classes", "resolution", "stem_width", "head_width"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArchitectureError(f"{field}={value!r} is invalid; use a positive int")
        if self.num_classes < 2:
            raise InvalidArchitectureError(f"num_classes={self.num_classes} is invalid; use >= 2")
        if self.stem_stride not in (1, 2):
            raise InvalidArchitectureError(f"stem_stride={self.stem_stride!r} is invalid; allowed values: (1, 2)")

    # ----------------------------------------------------------------- defaults
    @classmethod
    def for_task(cls, in_channels: int, num_classes: int, resolution: int) -> "SearchSpace":
        """Return the default space for images of ``resolution`` pixels and ``in_channels``.

        Four stages of widths 16, 24, 32, 48 with strides 1, 2, 2, 2; SE and hard-swish in
        the deeper stages, as in MobileNetV3. Sized for small images (8 to 64 pixels): the
        stem has stride 2 from 13 pixels up, so the first stage runs at half resolution,
        which keeps CPU training affordable.
        """
        stages = (
            StageConfig(width=16, stride=1, use_se=False, activation="relu"),
            StageConfig(width=24, stride=2, use_se=False, activation="relu"),
            StageConfig(width=32, stride=2, use_se=True, activation="hswish"),
            StageConfig(width=48, stride=2, use_se=True, activation="hswish"),
        )
        stem_stride = 1 if resolution <= 12 else 2
        return cls(
            in_channels=in_channels,
            num_classes=num_classes,
            resolution=resolution,
            stages=stages,
            stem_stride=stem_stride,
        )

    # --------------------------------------------------------------- properties
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def max_depth(self) -> int:
        return self.depth_choices[-1]

    @property
    def max_expand(self) -> int:
        return self.expand_choices[-1]

    @property
    def max_kernel(self) -> int:
        return self.kernel_choices[-1]

    @property
    def encoding_length(self) -> int:
        """Length of :meth:`encode`: one depth per stage, then kernel and expand per block slot."""
        return self.num_stages * (1 + 2 * self.max_depth)

    def size(self) -> int:
        """Return the number of distinct architectures in the space."""
        per_block = len(self.kernel_choices) * len(self.expand_choices)
        per_stage = sum(per_block**d for d in self.depth_choices)
        return per_stage**self.num_stages

    # ------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stages"] = [dataclasses.asdict(s) for s in self.stages]
        for key in ("depth_choices", "kernel_choices", "expand_choices"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidArchitectureError(
                f"unknown search-space keys {sorted(unknown)}; allowed keys: {sorted(known)}"
            )
        kwargs = dict(data)
        kwargs["stages"] = tuple(StageConfig(**s) for s in data.get("stages", ()))
        for key in ("depth_choices", "kernel_choices", "expand_choices"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as error:
            raise InvalidArchitectureError(f"search-space definition is incomplete: {error}") from error

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SearchSpace":
        return cls.from_dict(json.loads(text))

    def fingerprint(self) -> str:
        """Return a short stable hash of the space definition (16 hex characters)."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]

    # --------------------------------------------------------------- validation
    def validate(self, arch: Architecture) -> Architecture:
        """Return ``arch`` if it belongs to this space, else raise naming the bad field."""
        if not isinstance(arch, Architecture):
            raise InvalidArchitectureError(f"expected an Architecture, got {type(arch).__name__}")
        if len(arch.depths) != self.num_stages:
            raise InvalidArchitectureError(
                f"architecture has {len(arch.depths)} stages; this space has {self.num_stages}"
            )
        for stage, depth in enumerate(arch.depths):
            if depth not in self.depth_choices:
                raise InvalidArchitectureError(
                    f"stage {stage} depth={depth} is not allowed; allowed values: {self.depth_choices}"
                )
        for stage, index, kernel, expand in arch.blocks():
            if kernel not in self.kernel_choices:
                raise InvalidArchitectureError(
                    f"stage {stage} block {index} kernel={kernel} is not allowed; "
                    f"allowed values: {self.kernel_choices}"
                )
            if expand not in self.expand_choices:
                raise InvalidArchitectureError(
                    f"stage {stage} block {index} expand={expand} is not allowed; "
                    f"allowed values: {self.expand_choices}"
                )
        return arch

    def contains(self, arch: Architecture) -> bool:
        try:
            self.validate(arch)
        except InvalidArchitectureError:
            return False
        return True

    # ----------------------------------------------------------------- encoding
    def encode(self, arch: Architecture) -> list[int]:
        """Return the fixed-length integer encoding of ``arch``.

        Layout: ``num_stages`` depths, then ``num_stages * max_depth`` kernel sizes, then
        as many expand ratios, stage-major. Inactive block slots hold 0.
        """
        self.validate(arch)
        kernels: list[int] = []
        expands: list[int] = []
        for stage, depth in enumerate(arch.depths):
            padding = [0] * (self.max_depth - depth)
            kernels.extend(list(arch.kernels[stage]) + padding)
            expands.extend(list(arch.expands[stage]) + padding)
        return list(arch.depths) + kernels + expands

    def decode(self, encoding: Sequence[int]) -> Architecture:
        """Return the architecture of an :meth:`encode` vector; inactive slots are ignored."""
        values = list(encoding)
        if len(values) != self.encoding_length:
            raise InvalidArchitectureError(
                f"encoding has length {len(values)}; this space expects {self.encoding_length}"
            )
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise InvalidArchitectureError(f"encoding must contain only integers, got {values!r}")
        num_stages, max_depth = self.num_stages, self.max_depth
        depths = values[:num_stages]
        for stage, depth in enumerate(depths):
            if depth not in self.depth_choices:
                raise InvalidArchitectureError(
                    f"stage {stage} depth={depth} is not allowed; allowed values: {self.depth_choices}"
                )
        kernel_slots = values[num_stages : num_stages + num_stages * max_depth]
        expand_slots = values[num_stages + num_stages * max_depth :]
        kernels = tuple(
            tuple(kernel_slots[s * max_depth : s * max_depth + d]) for s, d in enumerate(depths)
        )
        expands = tuple(
            tuple(expand_slots[s * max_depth : s * max_depth + d]) for s, d in enumerate(depths)
        )
        return self.validate(Architecture(tuple(depths), kernels, expands))

    def arch_to_wire(self, arch: Architecture) -> str:
        """Return the JSON text that carries ``arch`` between processes: space id plus encoding."""
        return json.dumps({"space": self.fingerprint(), "encoding": self.encode(arch)})

    def arch_from_wire(self, text: str) -> Architecture:
        """Parse and validate :meth:`arch_to_wire` text; a different space id is rejected."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as error:
            raise InvalidArchitectureError(f"architecture message is not valid JSON: {error}") from error
        if not isinstance(data, dict) or set(data) != {"space", "encoding"}:
            raise InvalidArchitectureError(
                f"architecture message must be an object with keys 'space' and 'encoding', got {text[:200]!r}"
            )
        if data["space"] != self.fingerprint():
            raise InvalidArchitectureError(
                f"architecture belongs to space {data['space']!r}, not to this space "
                f"{self.fingerprint()!r}; load the run directory that produced it"
            )
        if not isinstance(data["encoding"], list):
            raise InvalidArchitectureError("architecture message field 'encoding' must be a list of ints")
        return self.decode(data["encoding"])

    # ---------------------------------------------------------------- sampling
    def smallest(self) -> Architecture:
        return self._constant(self.depth_choices[0], self.kernel_choices[0], self.expand_choices[0])

    def largest(self) -> Architecture:
        return self._constant(self.depth_choices[-1], self.kernel_choices[-1], self.expand_choices[-1])

    def _constant(self, depth: int, kernel: int, expand: int) -> Architecture:
        return Architecture(
            (depth,) * self.num_stages,
            ((kernel,) * depth,) * self.num_stages,
            ((expand,) * depth,) * self.num_stages,
        )

    def sample(self, rng: np.random.Generator) -> Architecture:
        """Draw every gene uniformly and independently (the Once-for-All sampling rule).

        Depths are uniform over ``depth_choices``, so shallow and deep subnets are drawn
        equally often. Use :meth:`sample_uniform` for a draw uniform over architectures.
        """
        depths = tuple(int(rng.choice(self.depth_choices)) for _ in range(self.num_stages))
        return self._fill(depths, rng)

    def sample_uniform(self, rng: np.random.Generator) -> Architecture:
        """Draw one architecture uniformly from the whole set of :meth:`size` architectures."""
        per_block = len(self.kernel_choices) * len(self.expand_choices)
        counts = np.array([float(per_block) ** d for d in self.depth_choices])
        probabilities = counts / counts.sum()
        depths = tuple(int(rng.choice(self.depth_choices, p=probabilities)) for _ in range(self.num_stages))
        return self._fill(depths, rng)

    def _fill(self, depths: Sequence[int], rng: np.random.Generator) -> Architecture:
        kernels = tuple(tuple(int(rng.choice(self.kernel_choices)) for _ in range(d)) for d in depths)
        expands = tuple(tuple(int(rng.choice(self.expand_choices)) for _ in range(d)) for d in depths)
        return Architecture(tuple(depths), kernels, expands)

    def mutate(self, arch: Architecture, rng: np.random.Generator, num_genes: int = 1) -> Architecture:
        """Return a valid architecture that differs from ``arch`` in ``num_genes`` random genes.

        A gene is one stage depth or one active block's kernel or expand. A depth that grows
        fills the new blocks with random settings. The result differs from ``arch`` whenever
        the space holds more than one architecture.
        """
        self.validate(arch)
        if num_genes < 1:
            raise InvalidArchitectureError(f"num_genes={num_genes} is invalid; use >= 1")
        depths = list(arch.depths)
        kernels = [list(k) for k in arch.kernels]
        expands = [list(e) for e in arch.expands]
        for _ in range(num_genes):
            genes = [("depth", s, -1) for s in range(self.num_stages) if len(self.depth_choices) > 1]
            for s, d in enumerate(depths):
                if len(self.kernel_choices) > 1:
                    genes.extend(("kernel", s, i) for i in range(d))
                if len(self.expand_choices) > 1:
                    genes.extend(("expand", s, i) for i in range(d))
            if not genes:
                break
            kind, stage, index = genes[int(rng.integers(len(genes)))]
            if kind == "depth":
                new_depth = _other_choice(self.depth_choices, depths[stage], rng)
                while len(kernels[stage]) < new_depth:
                    kernels[stage].append(int(rng.choice(self.kernel_choices)))
                    expands[stage].append(int(rng.choice(self.expand_choices)))
                depths[stage] = new_depth
                kernels[stage] = kernels[stage][:new_depth]
                expands[stage] = expands[stage][:new_depth]
            elif kind == "kernel":
                kernels[stage][index] = _other_choice(self.kernel_choices, kernels[stage][index], rng)
            else:
                expands[stage][index] = _other_choice(self.expand_choices, expands[stage][index], rng)
        return Architecture(tuple(depths), tuple(map(tuple, kernels)), tuple(map(tuple, expands)))

    def crossover(self, first: Architecture, second: Architecture, rng: np.random.Generator) -> Architecture:
        """Return a child whose every gene comes from one of the two parents.

        Each stage takes its depth from a random parent; each active block takes kernel
        and expand from a random parent that has that block.
        """
        self.validate(first)
        self.validate(second)
        depths, kernels, expands = [], [], []
        for stage in range(self.num_stages):
            depth = first.depths[stage] if rng.random() < 0.5 else second.depths[stage]
            stage_kernels, stage_expands = [], []
            for index in range(depth):
                donors = [p for p in (first, second) if p.depths[stage] > index]
                donor = donors[int(rng.integers(len(donors)))]
                stage_kernels.append(donor.kernels[stage][index])
                stage_expands.append(donor.expands[stage][index])
            depths.append(depth)
            kernels.append(tuple(stage_kernels))
            expands.append(tuple(stage_expands))
        return Architecture(tuple(depths), tuple(kernels), tuple(expands))

    # ------------------------------------------------------------------ layout
    @property
    def stem_resolution(self) -> int:
        return conv_output_size(self.resolution, self.stem_stride)

    def block_layout(self, arch: Architecture) -> list[BlockSpec]:
        """Return the shape of every active block of ``arch``, in execution order."""
        self.validate(arch)
        layout: list[BlockSpec] = []
        channels, resolution = self.stem_width, self.stem_resolution
        for stage, index, kernel, expand in arch.blocks():
            config = self.stages[stage]
            stride = config.stride if index == 0 else 1
            mid = channels * expand
            out_resolution = conv_output_size(resolution, stride)
            layout.append(
                BlockSpec(
                    stage=stage,
                    index=index,
                    in_channels=channels,
                    out_channels=config.width,
                    mid_channels=mid,
                    stride=stride,
                    kernel=kernel,
                    expand=expand,
                    use_se=config.use_se,
                    se_channels=se_channels(mid) if config.use_se else 0,
                    activation=config.activation,
                    in_resolution=resolution,
                    out_resolution=out_resolution,
                )
            )
            channels, resolution = config.width, out_resolution
        return layout

    @property
    def final_resolution(self) -> int:
        """Spatial size of the feature map that reaches the head, in pixels."""
        resolution = self.stem_resolution
        for config in self.stages:
            resolution = conv_output_size(resolution, config.stride)
        return resolution

    def stage_input_channels(self, stage: int) -> int:
        """Return the input channels of the first block of ``stage``."""
        return self.stem_width if stage == 0 else self.stages[stage - 1].width


def _other_choice(choices: Sequence[int], current: int, rng: np.random.Generator) -> int:
    others = [c for c in choices if c != current]
    return int(others[int(rng.integers(len(others)))])


def log10_size(space: SearchSpace) -> float:
    """Return log10 of :meth:`SearchSpace.size`, handy for reports."""
    return math.log10(space.size())
