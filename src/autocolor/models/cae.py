"""The CIFAR-10 convolutional autoencoder reference design, layer for layer."""

from __future__ import annotations

import torch
import torch.nn as nn

from autocolor.models import register_model
from autocolor.models.base import RGBModel


class CAE(RGBModel):
    """Gray 32x32 in, RGB 32x32 out, through a 512-unit bottleneck.

    The reference flattened with a global batch size, which breaks on the last,
    smaller batch; ``flatten(1)`` uses each batch's own size.
    """

    fixed_size = 32

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),  # (B, 16, 32, 32)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 16, 16, 16)
            nn.Conv2d(16, 32, 3),  # (B, 32, 14, 14)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, 7, 7)
        )
        self.decoder = nn.Sequential(
            nn.Linear(32 * 7 * 7, 512),
            nn.ReLU(),
            nn.Linear(512, 3 * 32 * 32),
            nn.Sigmoid(),
        )

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        assert gray.shape[-3:] == (1, 32, 32), f"cae takes (B, 1, 32, 32), got {tuple(gray.shape)}"
        code = self.encoder(gray).flatten(1)  # (B, 1568)
        return self.decoder(code).view(-1, 3, 32, 32)


@register_model("cae")
def cae() -> CAE:
    return CAE()
