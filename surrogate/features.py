"""Named, versioned feature vectors of architectures for the surrogate models.

:func:`arch_features` turns architectures of one :class:`~nas.space.SearchSpace`
into a float64 matrix whose columns are :func:`feature_names`. The features are
cheap: they come from the architecture genes and from
:meth:`~nas.space.SearchSpace.block_layout`, never from building a model.

Columns, in order (``S`` stages, ``D`` = ``space.max_depth`` block slots per stage):

* ``depth_s{s}``: active blocks of stage ``s``.
* ``kernel_s{s}_b{b}``, ``expand_s{s}_b{b}``: kernel size and expand ratio of
  block slot ``b`` of stage ``s``; 0 marks an inactive slot.
* ``macs_m``, ``params_k``: whole-model MACs (millions, one image) and trainable
  parameters (thousands), as :mod:`nas.complexity` counts them.
* ``macs_m_s{s}``, ``params_k_s{s}``: the same for the blocks of stage ``s``.
* ``dw_macs_m``, ``pw_macs_m``: depthwise and pointwise (1x1 and SE) MACs of all
  blocks, in millions; runtimes execute the two at very different speeds.
* ``dw_weights_k``: sum over blocks of ``kernel**2 * mid_channels`` (thousands).
* ``activations_k``: feature-map elements the blocks write (expanded, depthwise and
  projected maps), in thousands; a proxy for memory traffic.
* ``active_blocks``, ``se_blocks``, ``residual_blocks``: block counts.
* ``mean_kernel``, ``mean_expand``: averages over active blocks.

Bump :data:`FEATURE_SCHEMA_VERSION` whenever a column is added, removed, renamed
or computed differently; serialized surrogates record it and refuse to load
under another version.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from nas.complexity import block_macs, block_params, fixed_macs, fixed_params
from nas.errors import InvalidArchitectureError
from nas.space import Architecture, BlockSpec, SearchSpace

__all__ = ["FEATURE_SCHEMA_VERSION", "feature_names", "arch_features"]

FEATURE_SCHEMA_VERSION = 1

_GLOBAL_COLUMNS = (
    "dw_macs_m",
    "pw_macs_m",
    "dw_weights_k",
    "activations_k",
    "active_blocks",
    "se_blocks",
    "residual_blocks",
    "mean_kernel",
    "mean_expand",
)


def feature_names(space: SearchSpace) -> list[str]:
    """Return the column names of :func:`arch_features` for ``space``, in order."""
    stages = range(space.num_stages)
    slots = [(s, b) for s in stages for b in range(space.max_depth)]
    names = [f"depth_s{s}" for s in stages]
    names += [f"kernel_s{s}_b{b}" for s, b in slots]
    names += [f"expand_s{s}_b{b}" for s, b in slots]
    names += ["macs_m", "params_k"]
    names += [f"macs_m_s{s}" for s in stages]
    names += [f"params_k_s{s}" for s in stages]
    names += list(_GLOBAL_COLUMNS)
    return names


def _depthwise_macs(spec: BlockSpec) -> int:
    return spec.mid_channels * spec.out_resolution**2 * spec.kernel**2


def _activation_elements(spec: BlockSpec) -> int:
    expanded = spec.mid_channels * spec.in_resolution**2 if spec.expand != 1 else 0
    depthwise = spec.mid_channels * spec.out_resolution**2
    projected = spec.out_channels * spec.out_resolution**2
    return expanded + depthwise + projected


@functools.lru_cache(maxsize=4096)
def _block_stats(spec: BlockSpec) -> tuple[int, int, int, int, int]:
    """Return (MACs, parameters, depthwise MACs, depthwise weights, activation elements) of one block."""
    return (block_macs(spec), block_params(spec), _depthwise_macs(spec), spec.kernel**2 * spec.mid_channels,
            _activation_elements(spec))


@functools.lru_cache(maxsize=65536)
def _row(space: SearchSpace, arch: Architecture) -> tuple[float, ...]:
    """Return one architecture's feature row; cached, because a search scores the same ones again."""
    layout = space.block_layout(arch)  # Raises InvalidArchitectureError for a foreign arch.
    num_stages, max_depth = space.num_stages, space.max_depth
    kernels = [0.0] * (num_stages * max_depth)
    expands = [0.0] * (num_stages * max_depth)
    stage_macs = [0] * num_stages
    stage_params = [0] * num_stages
    dw_macs = dw_weights = activations = 0
    for spec in layout:
        kernels[spec.stage * max_depth + spec.index] = float(spec.kernel)
        expands[spec.stage * max_depth + spec.index] = float(spec.expand)
        macs, params, block_dw_macs, block_dw_weights, block_activations = _block_stats(spec)
        stage_macs[spec.stage] += macs
        stage_params[spec.stage] += params
        dw_macs += block_dw_macs
        dw_weights += block_dw_weights
        activations += block_activations

    blocks = len(layout)
    block_macs_total = sum(stage_macs)
    row: list[float] = [float(d) for d in arch.depths]
    row += kernels
    row += expands
    row += [(fixed_macs(space) + block_macs_total) / 1e6, (fixed_params(space) + sum(stage_params)) / 1e3]
    row += [m / 1e6 for m in stage_macs]
    row += [p / 1e3 for p in stage_params]
    row += [
        dw_macs / 1e6,
        (block_macs_total - dw_macs) / 1e6,
        dw_weights / 1e3,
        activations / 1e3,
        float(blocks),
        float(sum(spec.use_se for spec in layout)),
        float(sum(spec.residual for spec in layout)),
        sum(spec.kernel for spec in layout) / blocks if blocks else 0.0,
        sum(spec.expand for spec in layout) / blocks if blocks else 0.0,
    ]
    return tuple(row)


def arch_features(space: SearchSpace, archs: Sequence[Architecture]) -> np.ndarray:
    """Return the float64 feature matrix, shape ``(len(archs), len(feature_names(space)))``.

    Every architecture is validated against ``space``; one that does not belong raises
    :class:`nas.errors.InvalidArchitectureError` naming its position in ``archs``.
    An empty sequence gives an array of shape ``(0, d)``.
    """
    if isinstance(archs, Architecture):
        raise InvalidArchitectureError("archs must be a sequence of architectures, got a single Architecture")
    width = len(feature_names(space))
    rows = []
    for position, arch in enumerate(archs):
        try:
            rows.append(_row(space, arch))
        except InvalidArchitectureError as error:
            raise InvalidArchitectureError(f"archs[{position}] is not in the search space: {error}") from error
    if not rows:
        return np.zeros((0, width), dtype=np.float64)
    matrix = np.asarray(rows, dtype=np.float64)
    assert matrix.shape[1] == width, "feature_names and the feature rows disagree"
    return matrix
