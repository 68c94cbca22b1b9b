import pytest
import torch

from autocolor.models import available_models, count_parameters, create_model


def test_registry_lists_models_and_rejects_unknown_names():
    assert {"cae", "unet-rgb", "chroma-unet"} <= set(available_models())
    with pytest.raises(ValueError, match="known models: .*cae"):
        create_model("nope")


def test_cae_is_the_reference_design_and_handles_any_batch():
    model = create_model("cae")
    # conv 1*16*9+16, conv 16*32*9+32, linear 1568*512+512, linear 512*3072+3072
    assert count_parameters(model) == 160 + 4640 + 803328 + 1575936
    for batch in (1, 3, 100):  # the reference's global-batch flatten broke on a short last batch
        out = model(torch.rand(batch, 1, 32, 32))
        assert out.shape == (batch, 3, 32, 32)
        assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("size", [(150, 150), (64, 96), (33, 47)])
def test_unet_rgb_keeps_any_size(size):
    model = create_model("unet-rgb")
    out = model(torch.rand(2, 1, *size))
    assert out.shape == (2, 3, *size)
    assert [m.out_channels for m in model.down] == [64, 128, 256, 512]


@pytest.mark.parametrize("head,channels", [("classification", None), ("regression", 2)])
def test_chroma_unet_predicts_quarter_resolution_ab(head, channels):
    model = create_model("chroma-unet", width=32, head=head).eval()
    with torch.no_grad():
        raw = model(torch.rand(2, 1, 64, 96))
        ab = model.predict_ab(torch.rand(2, 1, 64, 96))
    assert raw.shape[1] == (channels or model.bins.shape[0])
    assert raw.shape[-2:] == (16, 24)
    assert ab.shape == (2, 2, 16, 24)
    assert ab.abs().max() <= 1.1  # normalized ab stays in the bins' range


def test_chroma_decoding_knobs():
    torch.manual_seed(0)
    model = create_model("chroma-unet", width=16).eval()
    x = torch.rand(1, 1, 32, 32) - 0.5
    with torch.no_grad():
        base = model.predict_ab(x)
        model.chroma_scale = 0.5
        assert torch.allclose(model.predict_ab(x), base * 0.5)
        model.chroma_scale = 1.0
        # Lower temperature moves the decoded ab towards the mode: further from the mean.
        mean = model.predict_ab(x, temperature=1.0)
        assert (model.predict_ab(x, temperature=0.2) - mean).abs().mean() > (base - mean).abs().mean() > 0
