import pytest
import torch

from autocolor.checkpoint import load_model
from autocolor.cli import main
from autocolor.data import build_splits
from autocolor.models import create_model
from autocolor.train import ColorizationLoss, TrainConfig, TrainingError, estimate_rebalancing, lr_at, train


def _overfit(model, loss_fn, rgb, gray, steps=40, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model, rgb, gray)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,kwargs,loss,size",
    [
        ("cae", {}, "mse", 32),
        ("unet-rgb", {}, "mse", 48),
        ("chroma-unet", {"width": 32}, "ce", 64),
        ("chroma-unet", {"width": 32, "head": "regression"}, "huber", 64),
    ],
)
def test_every_model_overfits_a_tiny_batch(name, kwargs, loss, size, folder_root):
    torch.manual_seed(0)
    splits = build_splits(f"folder:{folder_root}", size)
    rgb, gray = map(torch.stack, zip(*[splits.train[i] for i in range(4)]))
    model = create_model(name, **kwargs)
    weights = estimate_rebalancing(splits.train, model, 0.5, samples=16) if loss == "ce" else None
    losses = _overfit(model, ColorizationLoss(loss, model, weights), rgb, gray)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3, losses


@pytest.mark.parametrize(
    "model,data,size",
    [("cae", "cifar10", None), ("unet-rgb", "pairs", 48), ("chroma-unet", "folder", 64), ("cae", "pairs", None)],
)
def test_short_runs_on_each_dataset_write_everything(model, data, size, tmp_path, cifar_root, pairs_root, folder_root):
    root = {"cifar10": cifar_root, "pairs": pairs_root, "folder": folder_root}[data]
    cfg = TrainConfig(model=model, data=f"{data}:{root}", out=str(tmp_path / "run"), steps=4, batch_size=8,
                      image_size=size, verify_cifar=False, eval_every=2, checkpoint_every=2,
                      model_kwargs={"width": 16} if model == "chroma-unet" else {})
    result = train(cfg, progress=False)
    run = tmp_path / "run"
    assert result["step"] == 4
    assert {"model", "gray"} <= set(result["test"])
    assert (run / "grid.png").stat().st_size > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "latest").read_text() == "step-000000004"
    assert load_model(run).registry_name == model


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, folder_root):
    def cfg(out, steps):
        return TrainConfig(model="chroma-unet", data=f"folder:{folder_root}", out=str(out), steps=steps,
                           batch_size=4, image_size=32, model_kwargs={"width": 16}, checkpoint_every=3,
                           eval_every=100, schedule="cosine", warmup_steps=2)

    train(cfg(tmp_path / "whole", 8), progress=False)  # 19 training images: crosses an epoch boundary
    train(cfg(tmp_path / "split", 8).__class__(**{**cfg(tmp_path / "split", 8).__dict__, "time_limit_min": 0.0}),
          progress=False)  # stops (with a checkpoint) right after its first step
    assert (tmp_path / "split" / "checkpoints" / "latest").read_text() == "step-000000001"
    train(cfg(tmp_path / "split", 8), resume=True, progress=False)
    whole, split = load_model(tmp_path / "whole"), load_model(tmp_path / "split")
    for (k, a), b in zip(whole.state_dict().items(), split.state_dict().values()):
        assert torch.equal(a, b), k


def test_resume_skips_a_damaged_latest_checkpoint(tmp_path, folder_root, capsys):
    cfg = TrainConfig(model="cae", data=f"folder:{folder_root}", out=str(tmp_path), steps=4, batch_size=4,
                      checkpoint_every=2, eval_every=100)
    train(cfg, progress=False)
    (tmp_path / "checkpoints" / "step-000000004" / "optimizer.safetensors").write_bytes(b"garbage")
    result = train(TrainConfig(**{**cfg.__dict__, "steps": 5}), resume=True, progress=False)
    out = capsys.readouterr().out
    assert "skipping damaged checkpoint" in out and "step-000000004" in out
    assert "resuming from" in out and "step-000000002" in out
    assert result["step"] == 5


def test_config_errors():
    with pytest.raises(TrainingError, match="exactly one of steps or epochs"):
        TrainConfig(model="cae", data="folder:x", out="y").resolved()
    with pytest.raises(TrainingError, match=r"composite must be in \[0, 1\], got 1.5"):
        TrainConfig(model="cae", data="folder:x", out="y", steps=1, composite=1.5).resolved()
    with pytest.raises(TrainingError, match="predicts RGB"):
        ColorizationLoss("ce", create_model("cae"))
    cfg = TrainConfig(model="cae", data="folder:x", out="y", steps=10, schedule="cosine", warmup_steps=2).resolved()
    assert lr_at(0, 10, cfg) == pytest.approx(5e-4)
    assert lr_at(9, 10, cfg) < lr_at(3, 10, cfg) <= 1e-3


def test_cli_train_and_clear_error(tmp_path, cifar_root, capsys):
    assert main(["train", "--model", "cae", "--data", f"cifar10:{cifar_root}", "--no-verify", "--steps", "2",
                 "--batch-size", "10", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert "| gray copy |" in capsys.readouterr().out
    assert main(["train", "--model", "cae", "--data", f"cifar10:{tmp_path / 'none'}", "--steps", "2",
                 "--out", str(tmp_path / "r2")]) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err


def _gan_cfg(folder_root, out, steps, **extra):
    return TrainConfig(model="chroma-unet", data=f"folder:{folder_root}", out=str(out), steps=steps, batch_size=4,
                       image_size=32, model_kwargs={"width": 16}, checkpoint_every=3, eval_every=100,
                       gan_weight=0.1, **extra)


def test_gan_runs_resume_exactly_with_their_discriminator(tmp_path, folder_root):
    train(_gan_cfg(folder_root, tmp_path / "whole", 6), progress=False)
    ckpt = tmp_path / "whole" / "checkpoints" / "step-000000006"
    assert (ckpt / "aux.safetensors").stat().st_size > 0
    train(_gan_cfg(folder_root, tmp_path / "split", 6, time_limit_min=0.0), progress=False)
    train(_gan_cfg(folder_root, tmp_path / "split", 6), resume=True, progress=False)
    whole, split = load_model(tmp_path / "whole"), load_model(tmp_path / "split")
    for (k, a), b in zip(whole.state_dict().items(), split.state_dict().values()):
        assert torch.equal(a, b), k


def test_init_starts_from_a_trained_model(tmp_path, folder_root):
    base = TrainConfig(model="chroma-unet", data=f"folder:{folder_root}", out=str(tmp_path / "a"), steps=3,
                       batch_size=4, image_size=32, model_kwargs={"width": 16}, eval_every=100)
    train(base, progress=False)
    tuned = TrainConfig(**{**base.__dict__, "out": str(tmp_path / "b"), "init": str(tmp_path / "a"), "lr": 0.0,
                           "steps": 1})
    train(tuned, progress=False)
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name  # lr 0: the parameters are the initial ones
    assert not torch.equal(b.class_weights, torch.ones_like(b.class_weights))  # set from the data
    with pytest.raises(TrainingError, match="init: .*not a cae"):
        train(TrainConfig(model="cae", data=f"folder:{folder_root}", out=str(tmp_path / "c"), steps=1,
                          init=str(tmp_path / "a")), progress=False)
    with pytest.raises(TrainingError, match="gan_weight needs a chroma model"):
        train(TrainConfig(model="cae", data=f"folder:{folder_root}", out=str(tmp_path / "d"), steps=1,
                          gan_weight=0.1), progress=False)
