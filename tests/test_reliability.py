"""Crash-safe training, refused pickles and non-finite losses."""

import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from autocolor.checkpoint import CheckpointError, checkpoint_candidates, load_model, load_training_checkpoint
from autocolor.cli import main
from autocolor.models import create_model
from autocolor.train import ColorizationLoss, TrainConfig, TrainingError, train


def _train_cmd(data, out, steps):
    return [sys.executable, "-m", "autocolor", "train", "--model", "cae", "--data", f"folder:{data}", "--steps",
            str(steps), "--batch-size", "4", "--out", str(out), "--checkpoint-every", "1", "--eval-every", "1000",
            "--no-progress", "--resume"]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_ends_like_an_uninterrupted_run(tmp_path, folder_root):
    steps = 48
    rng = random.Random(1234)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    for _ in range(4):
        proc = subprocess.Popen(_train_cmd(folder_root, tmp_path / "killed", steps), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = latest.read_text() if latest.exists() else ""
        deadline = time.monotonic() + 120
        # Wait until this attempt has written a new checkpoint, then kill it a random moment later:
        # mid-step, mid-save or between the two.
        while time.monotonic() < deadline and proc.poll() is None:
            if latest.exists() and latest.read_text() != before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Whatever the moment, every checkpoint on disk is whole.
        for ckpt in checkpoint_candidates(tmp_path / "killed"):
            load_training_checkpoint(ckpt, create_model("cae"), torch.optim.Adam(create_model("cae").parameters()))
    subprocess.run(_train_cmd(folder_root, tmp_path / "killed", steps), env=env, check=True, capture_output=True)
    subprocess.run(_train_cmd(folder_root, tmp_path / "whole", steps), env=env, check=True, capture_output=True)
    killed, whole = load_model(tmp_path / "killed"), load_model(tmp_path / "whole")
    for (k, a), b in zip(whole.state_dict().items(), killed.state_dict().values()):
        assert torch.equal(a, b), k


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_payloads_are_refused_without_running(tmp_path, monkeypatch, folder_root):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(model="cae", data=f"folder:{folder_root}", out=str(tmp_path / "run"), steps=2, batch_size=4,
                      checkpoint_every=1, eval_every=100)
    train(cfg, progress=False)
    run = tmp_path / "run"
    (run / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors"):
        load_model(run)
    newest = checkpoint_candidates(run)[0]
    torch.save({"state": Payload()}, newest / "optimizer.safetensors")
    with pytest.raises(CheckpointError, match="optimizer.safetensors"):
        load_training_checkpoint(newest, create_model("cae"), torch.optim.Adam(create_model("cae").parameters()))
    assert main(["colorize", str(folder_root / "photo01.jpg"), "-o", str(tmp_path / "o"), "--model", str(run)]) == 2
    assert not (tmp_path / "PWNED").exists()


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path, folder_root, monkeypatch, capsys):
    real = ColorizationLoss.forward
    calls = {"n": 0}

    def flaky(self, model, rgb, gray, **kwargs):
        calls["n"] += 1
        loss = real(self, model, rgb, gray, **kwargs)
        return loss * float("nan") if calls["n"] in (3, 4) or calls["n"] > 8 else loss

    monkeypatch.setattr(ColorizationLoss, "forward", flaky)
    cfg = TrainConfig(model="cae", data=f"folder:{folder_root}", out=str(tmp_path), steps=20, batch_size=4,
                      checkpoint_every=2, eval_every=100, max_bad_steps=3)
    with pytest.raises(TrainingError, match="not finite for 3 steps in a row at step 6"):
        train(cfg, progress=False)
    assert capsys.readouterr().out.count("non-finite loss") == 4  # steps 2 and 2 again, then 6 twice
    # The last checkpoint holds finite weights from before the trouble.
    state, _ = load_training_checkpoint(checkpoint_candidates(tmp_path)[0], model := create_model("cae"),
                                        torch.optim.Adam(create_model("cae").parameters()))
    assert state["step"] == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_sigterm_stops_training_with_a_checkpoint(tmp_path, folder_root):
    cmd = _train_cmd(folder_root, tmp_path, 10_000)
    cmd[cmd.index("--checkpoint-every") + 1] = "1000"
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "tensorboard").glob("events.*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    assert "interrupted at step" in out and "continue with --resume" in out
    step = int((tmp_path / "checkpoints" / "latest").read_text().split("-")[1])
    assert 0 < step < 10_000
    assert load_model(tmp_path).registry_name == "cae"
