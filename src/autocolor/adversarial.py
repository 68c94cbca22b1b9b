"""An adversarial (PatchGAN) term for the chroma models, as in pix2pix and DeOldify.

A small conditional discriminator looks at (L, ab) patches at the model's
output resolution and learns to tell real chroma from predicted chroma; the
colorizer gets a bonus for fooling it. Per-pixel losses reward the average
of all plausible colors (gray-brown when unsure); the discriminator punishes
that average because real photos are not sepia. The term is added on top of
the model's own loss (``TrainConfig.gan_weight``), usually for a short
fine-tuning run from a trained model (``TrainConfig.init``): DeOldify's
"NoGAN" recipe, which keeps GAN training short and stable.

Hinge losses, spectral normalization and no batch normalization in the
discriminator (real and fake go through it as one batch).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from autocolor.color import normalize_ab


class PatchDiscriminator(nn.Module):
    """Normalized ``(B, 1, h, w)`` L and ``(B, 2, h, w)`` ab to ``(B, 1, h/4, w/4)`` realness scores.

    Each score sees about 22x22 pixels of the quarter-resolution chroma
    (about 90x90 of the image): regions, not the whole scene.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(width, width * 2, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(width * 2, width * 4, 3, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Conv2d(width * 4, 1, 3, padding=1)),
        )

    def forward(self, l_norm: torch.Tensor, ab_norm: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([l_norm, ab_norm], dim=1))


def discriminator_inputs(
    l_norm: torch.Tensor, ab_true: torch.Tensor, out_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """L and true ab (Lab units) pooled to the model's output size, normalized."""
    l_small = F.adaptive_avg_pool2d(l_norm, out_size)
    ab_small = normalize_ab(F.adaptive_avg_pool2d(ab_true, out_size))
    return l_small, ab_small


def generator_loss(disc: nn.Module, l_small: torch.Tensor, ab_fake: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss: raise the discriminator's score of the prediction.

    ``disc`` must be the plain module (not DDP-wrapped) with its parameters
    frozen, so this backward reaches only the colorizer.
    """
    return -disc(l_small, ab_fake.float()).mean()


def discriminator_loss(
    disc: nn.Module, l_small: torch.Tensor, ab_real: torch.Tensor, ab_fake: torch.Tensor
) -> torch.Tensor:
    """Hinge discriminator loss on one batch of real and (detached) predicted chroma."""
    n = len(ab_real)
    scores = disc(torch.cat([l_small, l_small]), torch.cat([ab_real, ab_fake.detach().float()]))
    return F.relu(1 - scores[:n]).mean() + F.relu(1 + scores[n:]).mean()


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
