import pytest
import torch

from autocolor.checkpoint import load_model, save_model
from autocolor.models import available_models, count_parameters, create_model
from autocolor.color import AB_SCALE
from autocolor.guide import empty_guide, make_guide, point_hints
from autocolor.quantize import Decoding, annealed_mean


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
        raw = model(torch.rand(2, 1, 64, 96) * 100)
        ab = model.predict_ab(torch.rand(2, 1, 64, 96) * 100)
    assert raw.shape[1] == (channels or model.bins.shape[0])
    assert raw.shape[-2:] == (16, 24)
    assert ab.shape == (2, 2, 16, 24)
    if head == "classification":  # an average of bin centers stays within the bins' range (Lab units)
        assert ab.abs().max() <= model.bins.abs().max() + 1e-4


def test_chroma_decoding_knobs():
    torch.manual_seed(0)
    model = create_model("chroma-unet", width=16).eval()
    x = torch.rand(1, 1, 32, 32) * 100
    with torch.no_grad():
        base = model.predict_ab(x)
        assert torch.allclose(model.predict_ab(x, decoding=Decoding(chroma_scale=0.5)), base * 0.5)
        model.decoding = Decoding(chroma_scale=0.5)  # the model folder's saved choice is the default
        assert torch.allclose(model.predict_ab(x), base * 0.5)
        model.decoding = Decoding()
        # Lower temperature moves the decoded ab towards the mode: further from the mean.
        mean = model.predict_ab(x, decoding=Decoding(temperature=1.0))
        cold = model.predict_ab(x, decoding=Decoding(temperature=0.2))
        assert (cold - mean).abs().mean() > (base - mean).abs().mean() > 0


@pytest.mark.parametrize("bad", [{"temperature": 0}, {"temperature": "hot"}, {"chroma_scale": float("nan")},
                                 {"prior_correction": float("inf")}, {"chroma_scale": -1}, {"warmth": 1},
                                 {"fusion_size": 16}, {"fusion_size": 128.0}, {"fusion_size": True},
                                 {"confidence_power": -1}, {"hint_edge": float("nan")}, {"hint_flip": 1}])
def test_decoding_refuses_bad_settings(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        Decoding.from_dict(bad)


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
    t = model.decoding.temperature
    expected = annealed_mean(p_logits, model.bins, t) * AB_SCALE
    assert torch.allclose(model.decode(biased), expected, atol=1e-3)
    zhang = Decoding(prior_correction=0.0)  # Zhang et al.'s decoding: the weights stay in
    assert torch.allclose(model.decode(biased, zhang), annealed_mean(biased, model.bins, t) * AB_SCALE, atol=1e-3)
    assert not torch.allclose(model.decode(biased, zhang), expected, atol=0.1)


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


def test_an_untrained_guided_model_is_the_automatic_one_until_it_learns_hints():
    torch.manual_seed(0)
    plain = create_model("chroma-unet", width=16).eval()
    guided = create_model("chroma-unet", width=16, guided=True).eval()
    state = {k: v for k, v in guided.state_dict().items()}
    for k, v in plain.state_dict().items():
        if k == "stem.0.weight":  # the guided stem has 3 more input channels (hint a, b, mask)
            state[k] = torch.cat([v, torch.zeros(v.shape[0], 3, *v.shape[2:])], dim=1)
        else:
            state[k] = v
    guided.load_state_dict(state)
    lightness = torch.rand(1, 1, 32, 48) * 100
    ab = torch.full((2, 32, 48), 30.0)
    hint, mask = point_hints(ab, [(8, 8)], 5)
    guide = make_guide(lightness, hint[None], mask[None], reference=torch.full((1, plain.bins.shape[0]), 1 / 261))
    with torch.no_grad():
        expected = plain.predict_ab(lightness)
        assert torch.allclose(guided.predict_ab(lightness), expected, atol=1e-5)
        assert torch.allclose(guided.predict_ab(lightness, empty_guide(1, 32, 48)), expected, atol=1e-5)
        assert torch.allclose(guided.predict_ab(lightness, guide), expected, atol=1e-5)  # its hint layers start at 0
        guided.spread_in.weight.data.normal_()
        assert not torch.allclose(guided.predict_ab(lightness, guide), expected, atol=1e-3)


def test_old_model_folders_keep_their_decoding_in_the_model_kwargs(tmp_path):
    import json

    model = create_model("chroma-unet", width=16)
    save_model(model, tmp_path)
    (tmp_path / "decoding.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    config["kwargs"].update(temperature=0.5, chroma_scale=1.5)  # as folders were written before decoding.json
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_model(tmp_path).decoding == Decoding(temperature=0.5, chroma_scale=1.5)


def test_for_inference_folds_the_batch_norms_and_keeps_the_outputs():
    from autocolor.models.base import for_inference

    torch.manual_seed(0)
    model = create_model("chroma-unet", width=16, guided=True)
    for module in model.modules():  # trained-looking statistics, so the folding has something to fold
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
    model.eval()
    lightness = torch.rand(2, 1, 64, 96) * 100
    hint, mask = point_hints(torch.full((2, 64, 96), 20.0), [(10, 20)], 5)
    guide = make_guide(lightness, torch.stack([hint, hint]), torch.stack([mask, mask]))
    with torch.no_grad():
        before = model.predict_ab(lightness), model.predict_ab(lightness, guide)
        fast = for_inference(model)
        after = fast.predict_ab(lightness), fast.predict_ab(lightness, guide)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    convs = [p for p in fast.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    for b, a in zip(before, after):
        assert torch.allclose(b, a, atol=1e-3), (b - a).abs().max()
