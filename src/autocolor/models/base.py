"""The model contract: what every colorizer declares and takes.

Two kinds of model, each a small base class with typed class attributes
(read directly, never probed with ``getattr``):

- :class:`ChromaModel`: Lab lightness in [0, 100] in, ab in Lab units out, at
  a quarter of the input size. Normalization happens inside, at the model's
  edges (Zhang et al.'s ``(L - 50) / 100`` and ab / 110), so callers deal in
  Lab units only. ``guided`` models also read a :class:`autocolor.guide.Guide`.
  The onnxruntime runner implements the same :meth:`ChromaModel.predict_ab`.
- :class:`RGBModel` (the reference designs): gray in [0, 1] in, RGB in [0, 1] out.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from autocolor.quantize import Decoding


class ChromaModel(nn.Module):
    predicts: ClassVar[Literal["ab"]] = "ab"
    fixed_size: ClassVar[int | None] = None  # the only input size it takes, or None for any
    stride: ClassVar[int] = 16  # input sides must be multiples of this
    guided: bool = False  # reads hints (a Guide) beside L
    exact_hints: ClassVar[bool] = False  # its ab already equals the hints where given (nothing to refine)
    spread_reach: float = 0.0  # how far its Guide's spread reaches (autocolor.guide.spread_hints)

    def predict_ab(self, lightness: torch.Tensor, guide=None, decoding: Decoding | None = None) -> torch.Tensor:
        """``(B, 1, H, W)`` L in [0, 100] to ``(B, 2, H/4, W/4)`` ab in Lab units."""
        raise NotImplementedError


class RGBModel(nn.Module):
    predicts: ClassVar[Literal["rgb"]] = "rgb"
    fixed_size: ClassVar[int | None] = None
    stride: ClassVar[int] = 16  # working sizes are rounded to multiples of this
    guided: bool = False


def for_inference(model: nn.Module) -> nn.Module:
    """``model`` made ready to colorize, in place: in eval mode, each convolution
    directly followed by a batch norm folded into one convolution
    (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`), and the weights laid out
    channels-last, the layout oneDNN's CPU convolutions run fastest. The
    outputs are the same up to float rounding. Not for training or saving
    afterwards: the batch norms are gone from its state dict.
    """
    model.eval()
    for module in model.modules():
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.running_mean is not None:
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    return model.to(memory_format=torch.channels_last)
