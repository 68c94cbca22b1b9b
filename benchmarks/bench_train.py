"""Training and inference throughput per model, on 1 and N processes.

    python benchmarks/bench_train.py [--data folder:data/photos2] [--procs 1,2] [--steps 6]

Prints a markdown table: training images/s at each model's reference
resolution and at 256x256, the data loader's share of a step, and inference
images/s. Multi-process rows run the same measurement under torchrun (gloo on
CPU, NCCL on GPUs), each process with cores/N threads; images/s counts the
global batch. Numbers are only comparable within one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [  # (model, kwargs, training size, global batch)
    ("cae", {}, 32, 100),
    ("unet-rgb", {}, 150, 32),
    ("unet-rgb", {}, 256, 32),
    ("chroma-unet", {"width": 48}, 128, 32),
    ("chroma-unet", {"width": 48}, 256, 32),
]


def synthetic_folder() -> str:
    """A folder of 64 structured 320x240 photos, for machines without the corpus."""
    import numpy as np
    from PIL import Image

    root = Path(tempfile.mkdtemp(prefix="bench-photos-"))
    rng = np.random.default_rng(0)
    for i in range(64):
        base = rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((320, 240), Image.BICUBIC).save(root / f"{i:03d}.jpg", quality=90)
    return f"folder:{root}"


def measure(data: str, steps: int) -> list[dict]:
    """Run inside each process (torchrun or alone); rank 0 returns the rows."""
    import torch
    from torch.utils.data import DataLoader

    from autocolor.data import build_splits
    from autocolor.distributed import all_sum, init_distributed
    from autocolor.models import create_model
    from autocolor.pipeline import colorize_tensor as predict_rgb
    from autocolor.train import ColorizationLoss, estimate_rebalancing, epoch_batches

    info, device = init_distributed("auto")
    rows = []
    for name, kwargs, size, batch in CASES:
        torch.manual_seed(0)
        splits = build_splits(data, size)
        model = create_model(name, **kwargs).to(device)
        loss_kind = "ce" if model.predicts == "ab" else "mse"
        weights = estimate_rebalancing(splits.train, model, 0.5, samples=64) if loss_kind == "ce" else None
        loss_fn = ColorizationLoss(loss_kind, model, weights)
        net = model
        if info.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        batch = min(batch, len(splits.train))
        batches = epoch_batches(len(splits.train), batch, 0, 0)
        mine = [b[info.rank :: info.world] for b in batches]
        while len(mine) < steps + 2:
            mine = mine + mine
        for b in mine[:1]:  # warm the image cache and the kernels
            for i in b:
                splits.train[i]
        data_s = compute_s = 0.0
        loader = iter(DataLoader(splits.train, batch_sampler=mine[: steps + 2]))
        for step in range(steps + 2):
            t0 = time.perf_counter()
            rgb, gray = next(loader)
            rgb, gray = rgb.to(device), gray.to(device)
            t1 = time.perf_counter()
            loss = loss_fn(net, rgb, gray)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            if step >= 2:
                data_s, compute_s = data_s + t1 - t0, compute_s + t2 - t1
        data_s, compute_s = all_sum([data_s, compute_s], info)
        data_s, compute_s = data_s / info.world, compute_s / info.world
        train_ips = steps * batch / (data_s + compute_s)
        # Inference: one process's share of the global batch at the same size.
        model.eval()
        gray = torch.rand(max(1, batch // info.world // 4), 1, size, size, device=device)
        predict_rgb(model, gray, render_size=size)
        t0 = time.perf_counter()
        reps = 3
        for _ in range(reps):
            predict_rgb(model, gray, render_size=size)
        if device.type == "cuda":
            torch.cuda.synchronize()
        (infer_ips,) = all_sum([reps * gray.shape[0] / (time.perf_counter() - t0)], info)
        rows.append({"model": name, "size": size, "batch": batch, "procs": info.world, "device": str(device.type),
                     "train_ips": train_ips, "data_share": data_s / (data_s + compute_s), "infer_ips": infer_ips})
    return rows if info.main else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="data spec (default: data/photos2 if built, else synthetic photos)")
    parser.add_argument("--procs", default="1,2", help="process counts to measure")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per case (after 2 warm-up steps)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rows = measure(args.data, args.steps)
        if rows:
            print("ROWS " + json.dumps(rows))
        return
    data = args.data or ("folder:data/photos2" if Path("data/photos2/train").is_dir() else synthetic_folder())
    cores = os.cpu_count() or 1
    all_rows = []
    for n in (int(p) for p in args.procs.split(",")):
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // n))}
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", __file__, "--worker", "--data", data, "--steps", str(args.steps)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        all_rows += json.loads(next(line for line in out.splitlines() if line.startswith("ROWS "))[5:])
    import platform

    import torch

    hw = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.processor() or 'CPU'}, {cores} cores"
    print(f"Hardware: {hw}; data: {data}; {args.steps} timed steps per case\n")
    print("| model | size | global batch | processes | train images/s | data loader share | inference images/s |")
    print("|---|---|---|---|---|---|---|")
    for r in all_rows:
        print(f"| {r['model']} | {r['size']} | {r['batch']} | {r['procs']} ({r['device']}) | {r['train_ips']:.1f} "
              f"| {100 * r['data_share']:.0f}% | {r['infer_ips']:.1f} |")


if __name__ == "__main__":
    main()
