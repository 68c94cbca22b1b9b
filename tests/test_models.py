import pytest
import torch

from autocolor.checkpoint import load_model, save_model
from autocolor.models import available_models, count_parameters, create_model
from autocolor.quantize import annealed_mean


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


def test_prior_correction_undoes_the_rebalancing_weights():
    # Rebalanced cross-entropy drives the softmax to p * w (normalized), not p.
    # Logits of that form must decode, with the correction, exactly as p would.
    torch.manual_seed(0)
    model = create_model("chroma-unet", width=16).eval()
    q = model.bins.shape[0]
    weights = torch.rand(q) * 5 + 0.1
    model.class_weights.copy_(weights)
    p_logits = torch.randn(2, q, 4, 4)
    biased = p_logits + weights.log().view(1, -1, 1, 1)
    expected = annealed_mean(p_logits, model.bins, model.temperature)
    assert torch.allclose(model.decode(biased), expected, atol=1e-5)
    model.prior_correction = 0.0  # Zhang et al.'s decoding: the weights stay in
    assert torch.allclose(model.decode(biased), annealed_mean(biased, model.bins, model.temperature), atol=1e-5)
    assert not torch.allclose(model.decode(biased), expected, atol=1e-3)


def test_class_weights_are_saved_with_the_model(tmp_path):
    model = create_model("chroma-unet", width=16)
    model.class_weights.fill_(2.0)
    save_model(model, tmp_path)
    assert torch.equal(load_model(tmp_path).class_weights, torch.full_like(model.class_weights, 2.0))
    assert not hasattr(create_model("chroma-unet", width=16, head="regression"), "class_weights")


def test_models_saved_without_class_weights_still_load(tmp_path):
    from safetensors.torch import load_file, save_file

    model = create_model("chroma-unet", width=16)
    save_model(model, tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["class_weights"]  # as written before the weights were stored
    save_file(state, str(tmp_path / "model.safetensors"))
    assert torch.equal(load_model(tmp_path).class_weights, torch.ones_like(model.class_weights))
