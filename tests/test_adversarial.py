import torch

from autocolor.adversarial import (
    PatchDiscriminator,
    discriminator_inputs,
    discriminator_loss,
    generator_loss,
    set_requires_grad,
)
from autocolor.color import normalize_ab
from autocolor.models import create_model


def test_discriminator_scores_patches():
    # One score per 4x4 cell, each seeing about 22x22 pixels: changing the chroma
    # in one corner moves the scores near it and none far from it.
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=8).eval()  # eval: spectral norm stops updating its estimate
    l_norm, ab = torch.zeros(3, 1, 64, 64), torch.zeros(3, 2, 64, 64)
    with torch.no_grad():
        before = disc(l_norm, ab)
        ab[:, :, :4, :4] = 0.5
        moved = (disc(l_norm, ab) - before).abs()
    assert before.shape == (3, 1, 16, 16)
    assert (moved[:, :, :2, :2] > 0).all()
    assert (moved[:, :, 8:, :] == 0).all() and (moved[:, :, :, 8:] == 0).all()


def test_generator_loss_reaches_only_the_colorizer():
    torch.manual_seed(0)
    model, disc = create_model("chroma-unet", width=16), PatchDiscriminator(width=8)
    l_norm = torch.rand(2, 1, 64, 64) - 0.5
    raw = model(l_norm)
    l_small, _ = discriminator_inputs(l_norm, torch.zeros(2, 2, 64, 64), raw.shape[-2:])
    set_requires_grad(disc, False)
    generator_loss(disc, l_small, model.decode(raw)).backward()
    assert all(p.grad is None for p in disc.parameters())
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_discriminator_learns_to_tell_vivid_chroma_from_gray():
    # Real chroma: a saturated sky-blue / grass-green split; fake: gray (ab 0).
    # A few hinge steps must separate them, the signal the colorizer gets.
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=16)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.999))
    l_small = torch.rand(8, 1, 32, 32) - 0.5
    ab = torch.zeros(8, 2, 32, 32)
    ab[:, 0, :16], ab[:, 1, :16] = -10.0, -40.0  # blue
    ab[:, 0, 16:], ab[:, 1, 16:] = -40.0, 40.0  # green
    real, fake = normalize_ab(ab), torch.zeros(8, 2, 32, 32)
    first = discriminator_loss(disc, l_small, real, fake).item()
    for _ in range(30):
        loss = discriminator_loss(disc, l_small, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with torch.no_grad():
        assert disc(l_small, real).mean() > disc(l_small, fake).mean()
