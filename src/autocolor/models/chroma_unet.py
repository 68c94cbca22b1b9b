"""The chroma colorizer: Lab L in, ab out, at a working resolution.

A compact residual U-Net sized for CPU training and inference. The encoder
goes down to 1/16 where a self-attention block and dilated residual blocks
see the whole scene (is it a beach or a forest?), and the decoder returns to
1/4 resolution, as Zhang et al. do: chroma varies slowly, and the
full-resolution L laid over it at the end restores the detail.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from autocolor.models import register_model
from autocolor.quantize import annealed_mean, in_gamut_ab_bins


def conv_bn_act(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_act(channels, channels, dilation=dilation),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class GlobalAttention(nn.Module):
    """Pre-norm multi-head self-attention over all positions of a feature map."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
        normed = self.norm(tokens)
        attended, _ = self.attn(normed, normed, normed, need_weights=False)
        return x + attended.transpose(1, 2).reshape(b, c, h, w)


class ChromaUNet(nn.Module):
    """Normalized L ``(B, 1, H, W)`` to ab logits or ab at ``(H/4, W/4)``.

    Args:
        width: channels at 1/4 resolution; the others scale from it.
        head: "classification" (a distribution over quantized ab bins, decoded
            by the annealed mean) or "regression" (ab directly).
        temperature: annealed-mean temperature used by :meth:`predict_ab`.
        chroma_scale: factor on the decoded ab. With ``temperature`` it sets
            where the model sits between dull and garish; both are calibrated
            on the validation split after training (benchmarks/tune_decoding.py).
        prior_correction: exponent on the class-rebalancing weights divided
            out of the predicted distribution before decoding (1: fully, 0:
            not at all, Zhang et al.'s decoding). See :meth:`decode`.
    """

    predicts = "ab"
    fixed_size = None
    stride = 16  # inputs are padded to a multiple of this

    def __init__(
        self,
        width: int = 64,
        head: str = "classification",
        temperature: float = 0.38,
        chroma_scale: float = 1.0,
        prior_correction: float = 1.0,
    ) -> None:
        super().__init__()
        if head not in ("classification", "regression"):
            raise ValueError(f"head must be 'classification' or 'regression', got {head!r}")
        self.head_kind = head
        self.temperature = temperature
        self.chroma_scale = chroma_scale
        self.prior_correction = prior_correction
        c1, c2, c4, c8, c16 = width // 4, width // 2, width, width * 2, width * 4
        self.stem = conv_bn_act(1, c1)
        self.down2 = conv_bn_act(c1, c2, stride=2)
        self.down4 = nn.Sequential(conv_bn_act(c2, c4, stride=2), ResidualBlock(c4))
        self.down8 = nn.Sequential(conv_bn_act(c4, c8, stride=2), ResidualBlock(c8))
        self.down16 = nn.Sequential(
            conv_bn_act(c8, c16, stride=2),
            ResidualBlock(c16, dilation=2),
            GlobalAttention(c16),
            ResidualBlock(c16, dilation=2),
        )
        self.up8 = nn.Sequential(conv_bn_act(c16 + c8, c8), ResidualBlock(c8))
        self.up4 = nn.Sequential(conv_bn_act(c8 + c4, c4), ResidualBlock(c4))
        bins = in_gamut_ab_bins()
        self.register_buffer("bins", bins, persistent=True)
        if head == "classification":
            # The rebalancing weights of the training loss, saved with the
            # weights so decoding can undo them; training fills them in.
            self.register_buffer("class_weights", torch.ones(bins.shape[0]), persistent=True)
        self.head = nn.Conv2d(c4, bins.shape[0] if head == "classification" else 2, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "class_weights"
        if self.head_kind == "classification" and key not in state_dict:
            # Saved before the weights were stored: nothing to divide out, the
            # model decodes as it always did.
            state_dict[key] = torch.ones_like(self.class_weights)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        h, w = l_norm.shape[-2:]
        assert h % self.stride == 0 and w % self.stride == 0, f"input size must be a multiple of {self.stride}"
        x4 = self.down4(self.down2(self.stem(l_norm)))
        x8 = self.down8(x4)
        x16 = self.down16(x8)
        y8 = self.up8(torch.cat([F.interpolate(x16, scale_factor=2.0, mode="bilinear"), x8], dim=1))
        y4 = self.up4(torch.cat([F.interpolate(y8, scale_factor=2.0, mode="bilinear"), x4], dim=1))
        return self.head(y4)  # (B, Q or 2, H/4, W/4)

    def decode(self, output: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Raw output to normalized ab ``(B, 2, H/4, W/4)``.

        Rebalanced cross-entropy with weight w_q on class q drives the softmax
        to p_q * w_q (normalized), not to the colors' probability p_q: the
        network learns to favour rare saturated colors everywhere, which is
        where the garish blotches of classification colorizers come from.
        Subtracting log w from the logits gives back p (the weights' job,
        steering the features towards rare colors, is done by then); the
        annealed mean and ``chroma_scale`` then set the vividness.
        """
        if self.head_kind == "regression":
            return output * self.chroma_scale
        log_prior = self.prior_correction * self.class_weights.log() if self.prior_correction else None
        return annealed_mean(output.float(), self.bins, temperature or self.temperature, log_prior) * self.chroma_scale

    def predict_ab(self, l_norm: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        return self.decode(self(l_norm), temperature)


@register_model("chroma-unet")
def chroma_unet(
    width: int = 64,
    head: str = "classification",
    temperature: float = 0.38,
    chroma_scale: float = 1.0,
    prior_correction: float = 1.0,
) -> ChromaUNet:
    return ChromaUNet(
        width=width, head=head, temperature=temperature, chroma_scale=chroma_scale, prior_correction=prior_correction
    )
