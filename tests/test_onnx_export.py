"""ONNX export: the graph is the network alone, with dynamic height and width, and agrees with PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autocolor.checkpoint import save_model
from autocolor.inference import Colorizer
from autocolor.models import create_model
from autocolor.onnx_export import OnnxChromaNet, export_onnx, export_onnx_bytes

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = create_model("chroma-unet", width=16).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode matters
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return net


def test_onnx_matches_torch_at_several_sizes(model, tmp_path):
    path = export_onnx(model, tmp_path / "model.onnx", render_size=64)
    runner = OnnxChromaNet(path)
    for shape in [(1, 1, 64, 64), (2, 1, 96, 160), (1, 1, 16, 48)]:
        l_norm = torch.rand(shape) - 0.5
        with torch.no_grad():
            expected = model.predict_ab(l_norm)
        got = runner.predict_ab(l_norm)
        assert got.shape == expected.shape
        # 1e-3 of the ab range: normalized ab spans about [-1, 1].
        assert (got - expected).abs().max().item() < 2e-3
    assert model.training is False


def test_colorizer_backends_agree(model, tmp_path):
    save_model(model, tmp_path / "m")
    gray = (np.add.outer(np.arange(70), np.arange(90)) % 256).astype(np.uint8)
    by_torch = Colorizer.load(tmp_path / "m").colorize(gray).astype(int)
    by_onnx = Colorizer.load(tmp_path / "m", backend="onnxruntime").colorize(gray).astype(int)
    assert np.abs(by_torch - by_onnx).max() <= 1


def test_rgb_models_are_refused():
    with pytest.raises(ValueError, match="only chroma models"):
        export_onnx_bytes(create_model("cae"))
