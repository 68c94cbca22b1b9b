"""Levin et al. 2004 as a model: hints spread by optimization, nothing learned.

It has the chroma contract (L in, ab out, hints through a Guide) so it runs
through the same pipeline, evaluation and CLI as the networks
(``--model levin``). Its ab comes at the full working size, not a quarter.
Without hints it leaves the photo gray; a reference photo means nothing to it.
"""

from __future__ import annotations

import torch

from autocolor.levin import levin_colorize
from autocolor.models import register_model
from autocolor.models.base import ChromaModel
from autocolor.quantize import Decoding, in_gamut_ab_bins


class LevinColorizer(ChromaModel):
    guided = True
    exact_hints = True

    def __init__(self) -> None:
        super().__init__()
        self.decoding = Decoding()
        self.register_buffer("bins", in_gamut_ab_bins(), persistent=False)

    def predict_ab(self, lightness: torch.Tensor, guide=None, decoding: Decoding | None = None) -> torch.Tensor:
        b, _, h, w = lightness.shape
        out = torch.zeros(b, 2, h, w)
        if guide is None:
            return out
        scale = (decoding or self.decoding).chroma_scale
        for i in range(b):
            spread = levin_colorize(lightness[i, 0].double().cpu().numpy(), guide.ab[i].cpu().numpy(),
                                    guide.mask[i, 0].cpu().numpy() > 0)
            out[i] = torch.from_numpy(spread) * scale
        return out


@register_model("levin")
def levin() -> LevinColorizer:
    return LevinColorizer()
