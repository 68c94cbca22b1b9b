"""Two gloo processes under torchrun train like one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autocolor.checkpoint import load_model
from autocolor.train import ColorizationLoss, TrainConfig, train
from helpers.uneven_ranks import nan_on_third_batch, run_config

# Every test launches torchrun: several processes, each importing torch.
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """``autocolor ARGS`` in ``nproc`` processes; fails the test on an error or a hang."""
    return torchrun_target(nproc, ["-m", "autocolor", *args], timeout)


def torchrun_target(nproc: int, target: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", *target]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torchrun starts each rank in a session of its own: only torchrun can
        # stop them all (SIGTERM, then SIGKILL to the ranks that do not stop).
        proc.terminate()
        out, err = proc.communicate(timeout=90)
        pytest.fail(f"torchrun hung for {timeout}s:\n{out[-3000:]}{err[-3000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


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


@pytest.mark.parametrize("trouble", ["nan", "time"])
def test_ranks_agree_to_skip_a_step_or_stop_when_only_one_rank_meets_trouble(trouble, tmp_path, folder_root, monkeypatch):
    # Only rank 1 sees a non-finite loss (its third batch) or runs out of time
    # (after its first step). Were each rank to decide alone, rank 0 would wait
    # in DDP's gradient all-reduce for a rank that skipped or left: a hang.
    script = Path(__file__).parent / "helpers" / "uneven_ranks.py"
    proc = torchrun_target(2, [str(script), str(folder_root), str(tmp_path / "run"), trouble], timeout=150)
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "run").glob("result-rank*.json"))]
    assert [r["rank"] for r in results] == [0, 1], proc.stdout[-2000:]
    expected_step = 5 if trouble == "nan" else 1  # the skipped batch is not a step; the time limit stops both
    assert [r["step"] for r in results] == [expected_step, expected_step]
    assert [r["spread"] for r in results] == [0.0, 0.0]  # identical weights on both ranks
    if trouble == "nan":
        assert "non-finite loss at step 2; step skipped" in proc.stdout  # rank 0 reports rank 1's bad loss
        # Both ranks skipped the same global batch: the run ends where one
        # process that met the NaN on that batch ends.
        monkeypatch.setattr(ColorizationLoss, "forward", nan_on_third_batch())
        torch.manual_seed(0)
        train(run_config(str(folder_root), str(tmp_path / "single")), progress=False)
        single, ddp = load_model(tmp_path / "single"), load_model(tmp_path / "run")
        for (k, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), k
    else:
        assert "time limit reached at step 1" in proc.stdout
        assert (tmp_path / "run" / "checkpoints" / "step-000000001").is_dir()


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
    single = sorted(p.name for p in (tmp_path / "single").iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if not p.name.startswith(".")) == single
    assert len(single) == 9
    records = (tmp_path / "ddp" / ".autocolor-record.jsonl").read_text().splitlines()
    assert len(records) == 9  # both ranks appended to one record, one whole line per output
    for name in single:
        assert (tmp_path / "single" / name).read_bytes() == (tmp_path / "ddp" / name).read_bytes(), name
    # A second run skips everything already written.
    again = subprocess.run(proc.args, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                           timeout=180)
    assert "all 2 ranks: done 0, skipped 9 (already written), failed 1" in again.stderr, again.stderr[-2000:]
