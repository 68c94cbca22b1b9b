import json

import pytest
import torch

from autocolor.checkpoint import (
    CheckpointError,
    checkpoint_candidates,
    load_model,
    load_training_checkpoint,
    save_model,
    save_training_checkpoint,
    save_decoding,
)
from autocolor.models import create_model
from autocolor.quantize import Decoding


def test_model_round_trip_is_bit_exact(tmp_path):
    model = create_model("chroma-unet", width=16)
    model.decoding = Decoding(temperature=0.5)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.decoding == Decoding(temperature=0.5)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "chroma-unet"
    assert not list(tmp_path.glob(".save-*"))  # no temporary left behind


def test_clear_errors_for_bad_model_folders(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: missing"):
        load_model(tmp_path)
    save_model(create_model("cae"), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{bad json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path)


def test_weights_of_another_model_are_refused(tmp_path):
    save_model(create_model("cae"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model": "unet-rgb"}))
    with pytest.raises(CheckpointError, match="do not fit unet-rgb"):
        load_model(tmp_path)


def _step(model, opt):
    loss = model(torch.rand(4, 1, 32, 32)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_training_checkpoint_restores_optimizer_exactly_and_keeps_two(tmp_path):
    torch.manual_seed(0)
    model = create_model("cae")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in (1, 2, 3):
        _step(model, opt)
        rng_state = torch.get_rng_state()
        save_training_checkpoint(tmp_path, model, opt, {"step": step, "epoch": 0, "batch_in_epoch": step},
                                 {"torch": rng_state})
    names = [p.name for p in checkpoint_candidates(tmp_path)]
    assert names == ["step-000000003", "step-000000002"]
    fresh = create_model("cae")
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    state, rng = load_training_checkpoint(checkpoint_candidates(tmp_path)[0], fresh, fresh_opt)
    assert state["step"] == 3 and torch.equal(rng["torch"], rng_state)
    torch.manual_seed(1)
    _step(model, opt)
    torch.manual_seed(1)
    _step(fresh, fresh_opt)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_saving_a_decoding_changes_only_the_decoding(tmp_path):
    model = create_model("chroma-unet", width=16)
    model.class_weights.uniform_(0.5, 2.0)
    save_model(model, tmp_path)
    weights = (tmp_path / "model.safetensors").read_bytes()
    config = (tmp_path / "config.json").read_text()
    save_decoding(tmp_path, Decoding(prior_correction=0.0, temperature=0.2))
    assert load_model(tmp_path).decoding == Decoding(prior_correction=0.0, temperature=0.2)
    assert (tmp_path / "model.safetensors").read_bytes() == weights
    assert (tmp_path / "config.json").read_text() == config
    (tmp_path / "decoding.json").write_text('{"temperature": "warm"}')
    with pytest.raises(CheckpointError, match="decoding.json: bad decoding settings"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="config.json: missing"):
        save_decoding(tmp_path / "nowhere", Decoding())
