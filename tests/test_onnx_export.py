"""ONNX export: the graph is the network alone, with dynamic height and width, and agrees with PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autocolor.checkpoint import save_model
from autocolor.guide import make_guide
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
    runner = OnnxChromaNet(path, model)
    for shape in [(1, 1, 64, 64), (2, 1, 96, 160), (1, 1, 16, 48)]:
        lightness = torch.rand(shape) * 100
        with torch.no_grad():
            expected = model.predict_ab(lightness)
        got = runner.predict_ab(lightness)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() < 0.2  # Lab units: ab spans about [-110, 110]
    assert model.training is False


def test_onnx_of_a_guided_model_reads_the_hints(tmp_path):
    torch.manual_seed(0)
    net = create_model("chroma-unet", width=16, guided=True).eval()
    for layer in (net.spread_in, net.reference_in[-1]):  # trained hint layers are not zero
        layer.weight.data.normal_(0, 5.0)
    runner = OnnxChromaNet(export_onnx_bytes(net, render_size=64), net)
    lightness = torch.rand(1, 1, 64, 96) * 100
    ab = torch.full((1, 2, 64, 96), 40.0)
    mask = torch.zeros(1, 1, 64, 96)
    mask[..., 10:15, 20:25] = 1.0
    guide = make_guide(lightness, ab, mask, torch.softmax(torch.randn(1, net.bins.shape[0]), 1))
    with torch.no_grad():
        expected, plain = net.predict_ab(lightness, guide), net.predict_ab(lightness)
    assert (runner.predict_ab(lightness, guide) - expected).abs().max().item() < 0.2
    assert (runner.predict_ab(lightness) - plain).abs().max().item() < 0.2
    assert (expected - plain).abs().max().item() > 1.0  # the hints did change the colors


def test_colorizer_backends_agree(model, tmp_path):
    save_model(model, tmp_path / "m")
    gray = (np.add.outer(np.arange(70), np.arange(90)) % 256).astype(np.uint8)
    by_torch = Colorizer.load(tmp_path / "m").colorize(gray).astype(int)
    by_onnx = Colorizer.load(tmp_path / "m", backend="onnxruntime").colorize(gray).astype(int)
    assert np.abs(by_torch - by_onnx).max() <= 1


def test_rgb_models_are_refused():
    with pytest.raises(ValueError, match="only chroma models"):
        export_onnx_bytes(create_model("cae"))
