"""ONNX export of extracted subnets, structural checks and ONNX Runtime parity.

Exports use PyTorch's TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``), which takes about 0.1 to 0.25 s per subnet of the default space
on one core. The torch.export-based exporter was measured against it with torch
2.14.1: it needs opset 18 or later, and its conversion down to opset 17 failed. It
also took about 3 s for a one-layer model and printed progress lines on
every call. Stage 1 exports hundreds of subnets, so it is not used.

``ONNX_OPSET = 17``: the models need only Conv, HardSwish and HardSigmoid (opset
14 and later), pooling, Gemm and element-wise ops, so any opset from 14 works. The
TorchScript exporter supports opsets up to 20. A lower opset lets older ONNX
Runtime builds on devices load the files.

The graph has one input ``input`` of shape (batch, C, H, W) and one output
``logits`` of shape (batch, num_classes). The batch axis is dynamic and named
``batch``. BatchNorm is folded into the convolutions (eval mode).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import torch
from torch import nn

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str] | None = None,
    *,
    input_shape: tuple[int, int, int],
    opset: int = ONNX_OPSET,
) -> bytes:
    """Return the serialized ONNX model of ``model`` in eval mode, and write it to ``path`` if given.

    ``input_shape`` is (channels, height, width) in pixels, and the batch axis is
    dynamic. The model is left in eval mode. Raises ``ValueError`` for a malformed shape.
    """
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape={input_shape!r} is invalid; give (channels, height, width) as positive ints")
    model.eval()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    example = torch.zeros((1, *input_shape), dtype=torch.float32, device=device)
    buffer = io.BytesIO()
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    data = buffer.getvalue()
    if path is not None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        logger.debug("wrote ONNX model (%d bytes) to %s", len(data), target)
    return data


def check_onnx(model_bytes: bytes, *, num_outputs: int | None = None) -> onnx.ModelProto:
    """Validate ``model_bytes`` with ``onnx.checker`` and check the input/output signature.

    Checks that there is one input ``input`` of rank 4 and one output ``logits`` of rank 2,
    both with the dynamic ``batch`` axis, and, if given, ``num_outputs`` logit columns.
    Returns the parsed model; raises ``ValueError`` naming what is wrong.
    """
    try:
        proto = onnx.load_from_string(model_bytes)
        onnx.checker.check_model(proto, full_check=True)
    except Exception as error:  # onnx raises several unrelated exception types for corrupt input
        raise ValueError(f"ONNX model is invalid: {error}") from error
    inputs = [(i.name, i.type.tensor_type.shape.dim) for i in proto.graph.input]
    outputs = [(o.name, o.type.tensor_type.shape.dim) for o in proto.graph.output]
    if [name for name, _ in inputs] != [INPUT_NAME] or [name for name, _ in outputs] != [OUTPUT_NAME]:
        raise ValueError(
            f"ONNX model has inputs {[n for n, _ in inputs]} and outputs {[n for n, _ in outputs]}; "
            f"expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]; export it with export_onnx"
        )
    (_, in_dims), (_, out_dims) = inputs[0], outputs[0]
    if len(in_dims) != 4 or len(out_dims) != 2:
        raise ValueError(f"ONNX input has rank {len(in_dims)} and output rank {len(out_dims)}; expected 4 and 2")
    if in_dims[0].dim_param != BATCH_AXIS or out_dims[0].dim_param != BATCH_AXIS:
        raise ValueError(f"ONNX model has no dynamic {BATCH_AXIS!r} axis; export it with export_onnx")
    if num_outputs is not None and out_dims[1].dim_value != num_outputs:
        raise ValueError(f"ONNX model has {out_dims[1].dim_value} logits; expected {num_outputs}")
    return proto


def onnx_parity(model: nn.Module, model_bytes: bytes, inputs: np.ndarray | torch.Tensor) -> float:
    """Return the max absolute difference between ``model`` (eval mode) and ONNX Runtime on ``inputs``.

    ``inputs`` is a float32 batch of shape (N, C, H, W); ONNX Runtime runs on the CPU with
    one thread. The model is left in eval mode.
    """
    import onnxruntime as ort  # imported lazily because only verified exports need it

    batch = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    model.eval()
    with torch.no_grad():
        expected = model(batch).float().numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
    if actual.shape != expected.shape:
        raise ValueError(f"ONNX Runtime output shape {actual.shape} differs from PyTorch {expected.shape}")
    return float(np.max(np.abs(actual - expected))) if expected.size else 0.0


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's per-call deprecation and tracing warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # NOTE: the legacy exporter is deprecated; switch to dynamo=True once it supports opset 17 quietly.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        yield
