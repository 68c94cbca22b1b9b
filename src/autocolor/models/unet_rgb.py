"""The landscape U-Net autoencoder reference design (gray in, RGB out)."""

from __future__ import annotations

import torch
import torch.nn as nn

from autocolor.models import register_model
from autocolor.models.base import RGBModel


class UNetRGB(RGBModel):
    """Strided convs 1->64->128->256->512, transposed convs back with skips.

    Transposed convolutions are told the skip's size, which sets their
    output_padding, so any input size (150x150 in the reference) comes back
    at the same size.
    """

    fixed_size = None

    def __init__(self) -> None:
        super().__init__()
        widths = [1, 64, 128, 256, 512]
        self.down = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1) for cin, cout in zip(widths[:-1], widths[1:])
        )
        self.up = nn.ModuleList(
            [
                nn.ConvTranspose2d(512, 256, 3, stride=2, padding=1),
                nn.ConvTranspose2d(512, 128, 3, stride=2, padding=1),  # 256 up + 256 skip
                nn.ConvTranspose2d(256, 64, 3, stride=2, padding=1),  # 128 up + 128 skip
                nn.ConvTranspose2d(128, 3, 3, stride=2, padding=1),  # 64 up + 64 skip
            ]
        )
        self.act = nn.ReLU()

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        sizes = [gray.shape[-2:]]
        skips = []
        x = gray
        for conv in self.down:
            x = self.act(conv(x))
            skips.append(x)
            sizes.append(x.shape[-2:])
        # skips: 64, 128, 256, 512 channels; the deepest is x itself.
        for i, deconv in enumerate(self.up):
            target = sizes[-2 - i]
            x = deconv(x, output_size=list(target))
            if i < len(self.up) - 1:
                x = torch.cat([self.act(x), skips[-2 - i]], dim=1)
        return torch.sigmoid(x)


@register_model("unet-rgb")
def unet_rgb() -> UNetRGB:
    return UNetRGB()
