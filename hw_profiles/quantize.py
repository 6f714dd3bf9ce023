"""int8 models for the ``precision = "int8"`` profiles: ONNX Runtime dynamic quantization.

Weights of Conv and MatMul are quantized to signed int8 ahead of time and
activations are quantized at run time (``quantize_dynamic``), so no calibration
data is needed. Conv becomes ``ConvInteger``, and MatMul, including the
classifier's Gemm, becomes ``MatMulInteger``. The model first goes through ONNX Runtime's quantization
pre-processing (shape inference and graph optimization, for example folding
BatchNorm into Conv), which is the order ONNX Runtime recommends.

NOTE: with ONNX Runtime 1.32 on an x86 (AMD EPYC) CPU, dynamic int8 ran 4 to 30
times slower than fp32 on small conv nets, worst for depthwise convolutions,
because ``ConvInteger`` has no fast kernel there. Static QDQ quantization ran at
about fp32 speed on the same nets. So an int8 profile of this kind is a real,
distinct execution setting but not a model of fast int8 hardware, which needs
its own profile and measurements.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import onnxruntime

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "APFP_NAS_INT8_CACHE"
_METHOD_TAG = "dynamic-qint8-v1"


class _QuantizerInfoFilter(logging.Filter):
    """Drop the per-tensor INFO lines that ONNX Runtime's quantizer logs on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname


def int8_cache_dir() -> Path:
    """Return ``$APFP_NAS_INT8_CACHE`` if set, else ``apfp-nas-int8`` in the system temp dir."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "apfp-nas-int8"


def quantize_int8(model_bytes: bytes) -> bytes:
    """Return the dynamically quantized (int8 weights) version of a serialized fp32 ONNX model.

    Results are cached on disk by the SHA-256 of the input, the ONNX Runtime version
    and the method, so repeated measurements of one model quantize it once.
    """
    key = hashlib.sha256(model_bytes + f"|{onnxruntime.__version__}|{_METHOD_TAG}".encode()).hexdigest()
    cache_dir = int8_cache_dir()
    cached = cache_dir / f"{key}.onnx"
    if cached.is_file():
        return cached.read_bytes()

    # Imported here because the quantization tools load slowly and fp32 runs never need them.
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="work-") as work:
        source = Path(work) / "fp32.onnx"
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "int8.onnx"
        source.write_bytes(model_bytes)
        root = logging.getLogger()
        quiet = _QuantizerInfoFilter()
        root.addFilter(quiet)
        try:
            try:
                quant_pre_process(source, prepared)
            except Exception as error:  # noqa: BLE001 - pre-processing is an optional improvement
                logger.warning("int8 pre-processing failed (%s); quantizing the model as exported", error)
                prepared = source
            quantize_dynamic(prepared, quantized, weight_type=QuantType.QInt8)
        finally:
            root.removeFilter(quiet)
        result = quantized.read_bytes()
        # The work folder is inside the cache folder, so this rename is atomic and a
        # concurrent reader never sees a partial file.
        os.replace(quantized, cached)
    logger.debug("quantized model %s to int8 (%d -> %d bytes)", key[:12], len(model_bytes), len(result))
    return result
