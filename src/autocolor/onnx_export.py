"""ONNX export of chroma models, and a runner that stands in for the model.

The graph holds the model contract's ``predict_ab``: L ``(B, 1, H, W)`` at
the working size in, ab ``(B, 2, H/4, W/4)`` in Lab units out (the model's
decoding included), plus the hint tensors for guided models. Resizing, the
hints' layout and the merge with the full-resolution L stay outside, in
:mod:`autocolor.pipeline`, exactly as for the PyTorch backend. Batch, height and width are dynamic axes (H and W
multiples of the model's stride).
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from autocolor.pipeline import DEFAULT_RENDER_SIZE

OPSET = 17
GUIDE_INPUTS = ["hint_ab", "hint_mask", "spread", "reference"]


class TraceableAttention(nn.Module):
    """The same computation as :class:`autocolor.models.chroma_unet.GlobalAttention`,
    sharing its weights, written so the tracer keeps H and W symbolic
    (``nn.MultiheadAttention`` bakes the sequence length into its reshapes)."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.norm = attention.norm
        self.attn = attention.attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads = self.attn.num_heads
        tokens = self.norm(x.flatten(2).transpose(1, 2))  # (B, H*W, C)
        q, k, v = F.linear(tokens, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, -1, heads, c // heads).transpose(1, 2)  # (B, heads, H*W, C/heads)

        attended = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v))
        attended = self.attn.out_proj(attended.transpose(1, 2).reshape(b, -1, c))
        return x + attended.transpose(1, 2).reshape(b, c, h, w)


class _ChromaGraph(nn.Module):
    """L to ab (Lab units): the model plus its decoding; guided models also
    take the :class:`autocolor.guide.Guide` tensors (a zero reference: none)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lightness: torch.Tensor, *guide: torch.Tensor) -> torch.Tensor:
        if not guide:
            return self.model.predict_ab(lightness)
        from autocolor.guide import Guide

        return self.model.predict_ab(lightness, Guide(*guide))


def _exportable(model: nn.Module) -> nn.Module:
    from autocolor.models.chroma_unet import GlobalAttention

    twin = copy.deepcopy(model).cpu().float().eval()
    for name, module in list(twin.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, GlobalAttention):
                setattr(module, child_name, TraceableAttention(child))
    return _ChromaGraph(twin).eval()


def export_onnx_bytes(model: nn.Module, render_size: int = DEFAULT_RENDER_SIZE) -> bytes:
    """Serialize a chroma model (``predicts == "ab"``) to ONNX.

    ``render_size`` only sets the example input traced; the axes stay dynamic.
    """
    if getattr(model, "predicts", None) != "ab":
        raise ValueError(
            f"only chroma models (predicts 'ab') export to ONNX; {getattr(model, 'registry_name', model)} predicts RGB"
        )
    stride = model.stride
    side = max(stride, render_size // stride * stride)
    example: tuple[torch.Tensor, ...] = (torch.zeros(1, 1, side, side),)
    names = ["lightness"]
    axes = {"lightness": {0: "batch", 2: "height", 3: "width"}, "ab": {0: "batch", 2: "height_4", 3: "width_4"}}
    if model.guided:
        from autocolor.guide import empty_guide

        g = empty_guide(1, side, side)
        g.ab[:, :, :4, :4], g.mask[:, :, :4, :4] = 10.0, 1.0  # traced with hints, so no branch is folded away
        example += (g.ab, g.mask, g.spread, torch.full((1, model.bins.shape[0]), 1.0 / model.bins.shape[0]))
        names += GUIDE_INPUTS
        axes.update({"hint_ab": {0: "batch", 2: "height", 3: "width"}, "hint_mask": {0: "batch", 2: "height", 3: "width"},
                     "spread": {0: "batch", 2: "height_4", 3: "width_4"}, "reference": {0: "batch"}})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about Python ints in shapes
        torch.onnx.export(
            _exportable(model), example, buffer, dynamo=False, opset_version=OPSET,
            input_names=names, output_names=["ab"], dynamic_axes=axes,
        )
    return buffer.getvalue()


def export_onnx(model: nn.Module, path: str | os.PathLike, render_size: int = DEFAULT_RENDER_SIZE) -> Path:
    """Write :func:`export_onnx_bytes` to ``path`` (atomically) and return it."""
    from autocolor.checkpoint import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, export_onnx_bytes(model, render_size))
    return path


class OnnxChromaNet:
    """An onnxruntime session with the chroma model contract
    (:class:`autocolor.models.base.ChromaModel`), for the model it was exported from.

    The decoding is part of the graph: the model's own, as it was exported.
    """

    predicts = "ab"
    fixed_size = None
    exact_hints = False

    def __init__(self, graph: bytes | str | os.PathLike, model: nn.Module, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Follow torch's thread setting (the CLI's --threads), and do not spin
        # waiting for work: spinning threads steal the cores the I/O threads need.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = graph if isinstance(graph, bytes) else str(graph)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.stride = model.stride
        self.guided = model.guided
        self.spread_reach = model.spread_reach
        self.bins = model.bins
        self.decoding = model.decoding

    def predict_ab(self, lightness: torch.Tensor, guide=None, decoding=None) -> torch.Tensor:
        if decoding is not None and decoding != self.decoding:
            raise ValueError("the onnxruntime graph holds the model's own decoding; use backend='torch' to try others")
        feed = {"lightness": lightness.detach().cpu().float().numpy()}
        if self.guided:
            from autocolor.guide import empty_guide

            b, _, h, w = lightness.shape
            g = guide if guide is not None else empty_guide(b, h, w)
            reference = g.reference if g.reference is not None else torch.zeros(b, self.bins.shape[0])
            for name, value in zip(GUIDE_INPUTS, (g.ab, g.mask, g.spread, reference)):
                feed[name] = value.detach().cpu().float().numpy()
        (ab,) = self.session.run(None, feed)
        return torch.from_numpy(ab)
