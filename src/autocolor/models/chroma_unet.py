"""The chroma colorizer: Lab L in, ab out, at a working resolution.

A compact residual U-Net sized for CPU training and inference. The encoder
goes down to 1/16 where a self-attention block and dilated residual blocks
see the whole scene (is it a beach or a forest?), and the decoder returns to
1/4 resolution, as Zhang et al. do: chroma varies slowly, and the
full-resolution L laid over it at the end restores the detail.

The guided variant (``guided=True``, Zhang et al. 2017) also reads color
hints: the sparse hint ab and mask join L at the input, the hints as Levin
et al.'s optimization spreads them join the features at 1/4, and a
reference photo's ab histogram is added to the features at 1/16, before
the attention. Those layers start at zero, so an untrained guided model is
the automatic one, and with no hints it is trained as the automatic one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from autocolor.color import AB_SCALE, normalize_ab, normalize_l
from autocolor.models import register_model
from autocolor.models.base import ChromaModel
from autocolor.quantize import Decoding, annealed_mean, in_gamut_ab_bins


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


class ChromaUNet(ChromaModel):
    """L ``(B, 1, H, W)`` in [0, 100] to ab logits (or ab) at ``(H/4, W/4)``.

    Args:
        width: channels at 1/4 resolution; the others scale from it.
        head: "classification" (a distribution over quantized ab bins, decoded
            by the annealed mean) or "regression" (ab directly).
        guided: also read a :class:`autocolor.guide.Guide` (hints).

    How the output is decoded is not part of the architecture: see
    :class:`autocolor.quantize.Decoding`; ``self.decoding`` is the model
    folder's saved choice, used when none is passed.
    """

    def __init__(self, width: int = 64, head: str = "classification", guided: bool = False,
                 spread_reach: float = 0.0) -> None:
        super().__init__()
        if head not in ("classification", "regression"):
            raise ValueError(f"head must be 'classification' or 'regression', got {head!r}")
        if isinstance(width, bool) or not isinstance(width, int) or not 8 <= width <= 512 or width % 8:
            raise ValueError(f"width must be a multiple of 8 from 8 to 512, got {width!r}")
        if isinstance(spread_reach, bool) or not isinstance(spread_reach, (int, float)) or not 0 <= spread_reach <= 4:
            raise ValueError(f"spread_reach must be a number from 0 to 4, got {spread_reach!r}")
        self.head_kind = head
        self.guided = bool(guided)
        self.spread_reach = float(spread_reach)
        self.decoding = Decoding()
        c1, c2, c4, c8, c16 = width // 4, width // 2, width, width * 2, width * 4
        self.stem = conv_bn_act(4 if self.guided else 1, c1)
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
        if self.guided:
            self.spread_in = nn.Conv2d(3, c4, 1)  # spread a, b and hint density at 1/4
            self.reference_in = nn.Sequential(nn.Linear(bins.shape[0] + 1, c16), nn.ReLU(inplace=True),
                                              nn.Linear(c16, c16))
            for layer in (self.spread_in, self.reference_in[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "class_weights"
        if self.head_kind == "classification" and key not in state_dict:
            # Saved before the weights were stored: nothing to divide out, the
            # model decodes as it always did.
            state_dict[key] = torch.ones_like(self.class_weights)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, lightness: torch.Tensor, guide=None) -> torch.Tensor:
        h, w = lightness.shape[-2:]
        assert h % self.stride == 0 and w % self.stride == 0, f"input size must be a multiple of {self.stride}"
        x = normalize_l(lightness)
        if self.guided:
            guide = guide if guide is not None else _no_guide(lightness)
            x = torch.cat([x, normalize_ab(guide.ab).to(x.dtype), guide.mask.to(x.dtype)], dim=1)
        x4 = self.down4(self.down2(self.stem(x)))
        if self.guided:
            density = F.avg_pool2d(guide.mask.to(x.dtype), 4)
            x4 = x4 + self.spread_in(torch.cat([normalize_ab(guide.spread).to(x.dtype), density], dim=1))
        x8 = self.down8(x4)
        x16 = self.down16[0](x8)
        if self.guided and guide.reference is not None:
            reference = guide.reference.to(x.dtype)
            present = reference.sum(dim=1, keepdim=True)  # 1 for a histogram, 0 for "none": exactly as None
            x16 = x16 + (present * self.reference_in(torch.cat([reference, present], dim=1)))[:, :, None, None]
        for layer in self.down16[1:]:
            x16 = layer(x16)
        y8 = self.up8(torch.cat([F.interpolate(x16, scale_factor=2.0, mode="bilinear"), x8], dim=1))
        y4 = self.up4(torch.cat([F.interpolate(y8, scale_factor=2.0, mode="bilinear"), x4], dim=1))
        return self.head(y4)  # (B, Q or 2, H/4, W/4)

    def _log_prior(self, decoding: Decoding) -> torch.Tensor | None:
        return decoding.prior_correction * self.class_weights.log() if decoding.prior_correction else None

    def decode(self, output: torch.Tensor, decoding: Decoding | None = None) -> torch.Tensor:
        """Raw output to ab in Lab units ``(B, 2, H/4, W/4)``.

        Rebalanced cross-entropy with weight w_q on class q drives the softmax
        to p_q * w_q (normalized), not to the colors' probability p_q: the
        network learns to favour rare saturated colors everywhere, which is
        where the garish blotches of classification colorizers come from.
        Subtracting log w from the logits gives back p (the weights' job,
        steering the features towards rare colors, is done by then); the
        annealed mean and ``chroma_scale`` then set the vividness.
        """
        decoding = decoding or self.decoding
        if self.head_kind == "regression":
            return output * (AB_SCALE * decoding.chroma_scale)
        ab = annealed_mean(output.float(), self.bins, decoding.temperature, self._log_prior(decoding),
                           decoding.confidence_power)
        return ab * (AB_SCALE * decoding.chroma_scale)

    def probabilities(self, output: torch.Tensor, decoding: Decoding | None = None) -> torch.Tensor:
        """The predicted color distribution ``(B, Q, H/4, W/4)`` over ``self.bins``
        (rebalancing divided out as in :meth:`decode`, no annealing)."""
        if self.head_kind != "classification":
            raise ValueError("only a classification head predicts a color distribution")
        log_prior = self._log_prior(decoding or self.decoding)
        logits = output.float() if log_prior is None else output.float() - log_prior.view(1, -1, 1, 1)
        return torch.softmax(logits, dim=1)

    def predict_ab(self, lightness: torch.Tensor, guide=None, decoding: Decoding | None = None) -> torch.Tensor:
        # contiguous: after for_inference the output is channels-last, which would slow the big upsampling after
        return self.decode(self(lightness, guide), decoding).contiguous()


def _no_guide(lightness: torch.Tensor):
    from autocolor.guide import empty_guide

    b, _, h, w = lightness.shape
    return empty_guide(b, h, w, lightness.device)


@register_model("chroma-unet")
def chroma_unet(width: int = 64, head: str = "classification", guided: bool = False,
                spread_reach: float = 0.0) -> ChromaUNet:
    return ChromaUNet(width=width, head=head, guided=guided, spread_reach=spread_reach)
