"""ONNX export of extracted subnets: checker, signature, dynamic batch and parity with PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from nas.data import ArraySplit
from nas.export import ONNX_OPSET, check_onnx, export_onnx, onnx_parity
from nas.finetune import recalibrate_bn
from nas.space import SearchSpace
from nas.supernet import ElasticSupernet

SPACE = SearchSpace.for_task(1, 10, 16)


def _randomize(supernet: ElasticSupernet, seed: int) -> ElasticSupernet:
    """Give BatchNorm affine terms and the classifier non-trivial values.

    A freshly initialized network has unit BN scales and near-zero logits, which would let a
    wrong BN folding or a small export error pass the parity check unnoticed. The values stay
    in the range a trained network has, so logits come out of order 1.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in supernet.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
        supernet.classifier.weight.normal_(0.0, 0.1, generator=generator)
    return supernet


def _subnet(supernet: ElasticSupernet, arch) -> nn.Module:
    """Extract ``arch`` and give its BatchNorm layers real (non-unit) running statistics."""
    subnet = supernet.extract_subnet(arch)
    noise = np.random.default_rng(0).standard_normal((128, 1, 16, 16)).astype(np.float32)
    recalibrate_bn(subnet, ArraySplit(noise, np.zeros(128, dtype=np.int64)), num_batches=2)
    return subnet


def _archs() -> list:
    rng = np.random.default_rng(7)
    return [SPACE.smallest(), SPACE.largest()] + [SPACE.sample(rng) for _ in range(3)]


@pytest.fixture(scope="module")
def supernet() -> ElasticSupernet:
    return _randomize(ElasticSupernet(SPACE, seed=3), seed=4)


@pytest.mark.parametrize("arch_index", range(5), ids=["smallest", "largest", "random0", "random1", "random2"])
def test_onnx_parity_batch_1_and_5(supernet: ElasticSupernet, arch_index: int) -> None:
    arch = _archs()[arch_index]
    subnet = _subnet(supernet, arch)
    model_bytes = export_onnx(subnet, input_shape=(1, 16, 16))
    check_onnx(model_bytes, num_outputs=10)
    rng = np.random.default_rng(arch_index)
    for batch in (1, 5):
        inputs = rng.standard_normal((batch, 1, 16, 16)).astype(np.float32)
        with torch.no_grad():
            scale = subnet(torch.from_numpy(inputs)).abs().max().item()
        assert scale > 0.5, "logits too small for the parity check to mean anything"
        assert onnx_parity(subnet, model_bytes, inputs) <= 1e-4


def test_export_signature_and_opset(supernet: ElasticSupernet) -> None:
    subnet = _subnet(supernet, SPACE.smallest())
    proto = check_onnx(export_onnx(subnet, input_shape=(1, 16, 16)))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [1, 16, 16]
    default_domain = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    assert default_domain == [ONNX_OPSET]
    assert not any(node.op_type == "BatchNormalization" for node in proto.graph.node), "BN was not folded"
    assert not subnet.training


def test_export_writes_file_and_is_quiet(supernet: ElasticSupernet, tmp_path) -> None:
    subnet = supernet.extract_subnet(SPACE.largest())
    target = tmp_path / "nested" / "model.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_bytes = export_onnx(subnet, target, input_shape=(1, 16, 16))
    assert [str(w.message) for w in caught] == []
    assert target.read_bytes() == model_bytes
    onnx.checker.check_model(onnx.load(str(target)))


def test_check_onnx_rejects_bad_models(supernet: ElasticSupernet) -> None:
    with pytest.raises(ValueError, match="ONNX model is invalid"):
        check_onnx(b"not an onnx model")
    model_bytes = export_onnx(supernet.extract_subnet(SPACE.smallest()), input_shape=(1, 16, 16))
    with pytest.raises(ValueError, match="expected 3"):
        check_onnx(model_bytes, num_outputs=3)


def test_export_rejects_bad_input_shape(supernet: ElasticSupernet) -> None:
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(supernet.extract_subnet(SPACE.smallest()), input_shape=(16, 16))  # type: ignore[arg-type]
