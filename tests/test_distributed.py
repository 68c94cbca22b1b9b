"""Two gloo processes under torchrun train like one process with the same global batch."""

import os
import socket
import subprocess
import sys

import pytest
import torch

from autocolor.checkpoint import load_model
from autocolor.train import TrainConfig, train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "autocolor", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("model", ["cae", "unet-rgb"])
def test_two_process_training_matches_one_process(model, tmp_path, folder_root):
    common = dict(model=model, data=f"folder:{folder_root}", steps=5, batch_size=8,
                  image_size=32 if model == "cae" else 48, checkpoint_every=100, eval_every=100)
    torch.manual_seed(0)
    train(TrainConfig(out=str(tmp_path / "single"), **common), progress=False)
    proc = torchrun(2, "train", "--model", model, "--data", common["data"], "--steps", "5", "--batch-size", "8",
                    "--image-size", str(common["image_size"]), "--out", str(tmp_path / "ddp"), "--no-progress",
                    "--eval-every", "100")
    assert "weights identical across 2 ranks: True" in proc.stdout
    assert "x 2 processes" in proc.stdout
    single, ddp = load_model(tmp_path / "single"), load_model(tmp_path / "ddp")
    for (k, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        # Gradients are summed in another order across processes: equal up to float rounding.
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), k
    # Rank 0 alone wrote the logs and checkpoints.
    assert len(list((tmp_path / "ddp" / "tensorboard").glob("events.*"))) == 1


def test_two_process_gan_training_keeps_ranks_in_step(tmp_path, folder_root):
    # The PatchGAN term under DDP: the colorizer's adversarial gradient goes
    # through a frozen plain discriminator, the discriminator's own step through
    # its DDP wrapper; both must leave the ranks with identical weights.
    proc = torchrun(2, "train", "--model", "chroma-unet", "--model-arg", "width=16", "--data", f"folder:{folder_root}",
                    "--steps", "3", "--batch-size", "8", "--image-size", "32", "--gan-weight", "0.1",
                    "--checkpoint-every", "3", "--eval-every", "100", "--out", str(tmp_path / "gan"), "--no-progress")
    assert "weights identical across 2 ranks: True" in proc.stdout
    assert (tmp_path / "gan" / "checkpoints" / "step-000000003" / "aux.safetensors").is_file()


def test_two_process_colorize_writes_each_file_once_like_one_process(tmp_path, folder_root):
    from autocolor.checkpoint import save_model
    from autocolor.cli import main
    from autocolor.models import create_model

    model = tmp_path / "model"
    save_model(create_model("chroma-unet", width=16).eval(), model)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in sorted(folder_root.rglob("*.jpg"))[:9]:
        (inputs / p.name).write_bytes(p.read_bytes())
    (inputs / "broken.png").write_text("not an image")
    # One PyTorch thread per process on both sides, so the float arithmetic is the same.
    assert main(["colorize", str(inputs), "-o", str(tmp_path / "single"), "--model", str(model), "--no-progress",
                 "--threads", "1"]) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={free_port()}", "-m", "autocolor", "colorize", str(inputs), "-o", str(tmp_path / "ddp"),
         "--model", str(model), "--no-progress", "--threads", "1"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0  # the broken file fails on one rank
    assert "all 2 ranks: done 9, skipped 0 (already written), failed 1" in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("broken.png: ") == 1  # reported once, by the rank that had it
    single = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == single and len(single) == 9
    for name in single:
        assert (tmp_path / "single" / name).read_bytes() == (tmp_path / "ddp" / name).read_bytes(), name
    # A second run skips everything already written.
    again = subprocess.run(proc.args, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                           timeout=180)
    assert "all 2 ranks: done 0, skipped 9 (already written), failed 1" in again.stderr, again.stderr[-2000:]
