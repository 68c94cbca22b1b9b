"""Training: one typed config, a resumable loop, live TensorBoard and grid PNGs.

Runs as one process, or under ``torchrun`` with DistributedDataParallel
(NCCL on GPUs, gloo on CPUs): each global batch is cut into one slice per
rank, so N processes see exactly the samples one process would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from autocolor import adversarial
from autocolor.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    checkpoint_candidates,
    load_model,
    load_training_checkpoint,
    save_model,
    save_training_checkpoint,
)
from autocolor.color import gray_to_l, normalize_ab, normalize_l, rgb_to_lab
from autocolor.data import build_splits, sample_generator, set_epoch
from autocolor.guide import simulate_guide
from autocolor.distributed import init_distributed, weights_spread_across_ranks
from autocolor.models import count_parameters, create_model
from autocolor.pipeline import colorize_tensor
from autocolor.quantize import bin_counts, rebalanced_cross_entropy, rebalancing_weights

# Per-model defaults follow the reference designs (batch 100 at 32 px for the
# CAE, 32 at 150 px for the U-Net); the chroma model trains on 128 px crops.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "cae": {"batch_size": 100, "image_size": 32, "loss": "mse"},
    "unet-rgb": {"batch_size": 32, "image_size": 150, "loss": "mse"},
    "chroma-unet": {"batch_size": 16, "image_size": 128, "loss": "ce"},
}
LOSSES = ("mse", "ce", "huber")


class TrainingError(RuntimeError):
    pass


@dataclass
class TrainConfig:
    model: str  # registry name
    data: str  # cifar10:ROOT, pairs:DIR or folder:DIR
    out: str  # run folder: checkpoints, TensorBoard logs, grid.png, final weights
    steps: int | None = None  # optimizer steps; or give epochs
    epochs: int | None = None
    batch_size: int | None = None  # global batch; None: the model's reference default
    image_size: int | None = None  # training crop side; None: the model's default
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: str | None = None  # mse (RGB models), ce (rebalanced classification) or huber (ab regression)
    lr: float = 1e-3  # Adam, as in both references
    weight_decay: float = 0.0
    schedule: str = "constant"  # or "cosine": warm up, then decay to 5% of lr
    warmup_steps: int = 0
    rebalance_mix: float = 0.5  # lambda in Zhang et al.'s class rebalancing
    crop_min_scale: float = 0.35  # smallest training crop, as a share of the photo's area
    gan_weight: float = 0.0  # weight of the PatchGAN term on ab (chroma models); 0: off
    init: str | None = None  # model folder whose weights start the run (fine-tuning: fresh optimizer)
    seed: int = 0
    split: str = "random"  # cifar10 only: "random" 80/20 of all 60k, or "official"
    download: bool = False
    verify_cifar: bool = True  # check CIFAR-10 batch checksums
    checkpoint_every: int = 500
    eval_every: int = 250
    eval_batches: int = 4
    log_every: int = 10
    workers: int = 0  # DataLoader worker processes
    device: str = "auto"
    time_limit_min: float | None = None  # stop (with a checkpoint) after this much training time
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops

    def resolved(self) -> "TrainConfig":
        """A copy with the model's defaults filled in and the settings checked."""
        defaults = MODEL_DEFAULTS.get(self.model, MODEL_DEFAULTS["chroma-unet"])
        cfg = TrainConfig(**{f.name: getattr(self, f.name) for f in fields(self)})
        cfg.batch_size = cfg.batch_size or defaults["batch_size"]
        cfg.image_size = cfg.image_size or defaults["image_size"]
        cfg.loss = cfg.loss or defaults["loss"]
        if (cfg.steps is None) == (cfg.epochs is None):
            raise TrainingError("give exactly one of steps or epochs")
        if cfg.loss not in LOSSES:
            raise TrainingError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
        if cfg.schedule not in ("constant", "cosine"):
            raise TrainingError(f"unknown schedule {cfg.schedule!r}")
        if not 0.01 <= cfg.crop_min_scale <= 1.0:
            raise TrainingError(f"crop_min_scale must be in [0.01, 1], got {cfg.crop_min_scale}")
        if cfg.gan_weight < 0:
            raise TrainingError(f"gan_weight must be 0 (off) or positive, got {cfg.gan_weight}")
        return cfg

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ---------------------------------------------------------------- helpers


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate for ``step`` (0-based) of ``total``."""
    if cfg.schedule == "constant":
        return cfg.lr
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a seeded permutation cut into full batches."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    usable = n - n % batch_size if n >= batch_size else n
    return [order[i : i + batch_size] for i in range(0, usable, batch_size)]


class ColorizationLoss(nn.Module):
    """The training objective for a model: MSE on RGB, or CE / Huber on ab."""

    def __init__(self, kind: str, model: nn.Module, weights: torch.Tensor | None = None) -> None:
        super().__init__()
        if model.predicts == "rgb" and kind != "mse":
            raise TrainingError(f"{model.registry_name} predicts RGB: use loss mse, not {kind}")
        if model.predicts == "ab" and kind == "mse":
            raise TrainingError(f"{model.registry_name} predicts ab: use loss ce or huber")
        if kind == "ce" and getattr(model, "head_kind", "") != "classification":
            raise TrainingError("loss ce needs a classification head (model kwarg head=classification)")
        if kind == "huber" and getattr(model, "head_kind", "") != "regression":
            raise TrainingError("loss huber needs a regression head (model kwarg head=regression)")
        self.kind = kind
        self.weights = weights

    def forward(
        self, model: nn.Module, rgb: torch.Tensor, gray: torch.Tensor, with_output: bool = False,
        hint_gens: list[torch.Generator] | None = None,
    ):
        """The loss; with ``with_output`` (ab models), also the raw output and
        the true ab in Lab units, for an adversarial term on top. Guided
        models get simulated hints drawn with ``hint_gens`` (one per image)."""
        if self.kind == "mse":
            return F.mse_loss(model(gray).float(), rgb)
        ab = rgb_to_lab(rgb)[:, 1:]  # (B, 2, H, W) in Lab units
        lightness = gray_to_l(gray)
        unwrapped = model.module if hasattr(model, "module") else model
        guide = None
        if unwrapped.guided:
            gens = hint_gens or [torch.Generator().manual_seed(i) for i in range(len(rgb))]
            guide = simulate_guide(lightness, ab, gens, unwrapped.bins.to(ab.device))
        out = model(lightness, guide)
        if self.kind == "ce":
            loss = rebalanced_cross_entropy(out, ab, unwrapped.bins, self.weights.to(out.device))
        else:
            target = F.adaptive_avg_pool2d(normalize_ab(ab), out.shape[-2:])
            loss = F.smooth_l1_loss(out.float(), target, beta=0.1)
        return (loss, out, ab) if with_output else loss


def estimate_rebalancing(dataset: Dataset, model: nn.Module, mix: float, samples: int = 512) -> torch.Tensor:
    """Class-rebalancing weights from the ab histogram of up to ``samples`` training crops."""
    n = min(samples, len(dataset))
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(1234))[:n].tolist()
    counts = torch.zeros(model.bins.shape[0], dtype=torch.long)
    for start in range(0, n, 64):
        rgb = torch.stack([dataset[i][0] for i in idx[start : start + 64]])
        ab = F.avg_pool2d(rgb_to_lab(rgb)[:, 1:], 4)
        counts += bin_counts(ab, model.bins)
    return rebalancing_weights(counts, model.bins, mix=mix)


@torch.no_grad()
def image_grid(model: nn.Module, rgb: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """Rows of gray | prediction | truth, as one ``(3, H, W)`` image."""
    from torchvision.utils import make_grid

    pred = colorize_tensor(model, gray, render_size=gray.shape[-1])
    rows = [torch.stack([gray[i].expand(3, -1, -1), pred[i].cpu(), rgb[i]]) for i in range(len(rgb))]
    return make_grid(torch.cat(rows), nrow=3, padding=2, pad_value=1.0)


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a ``(3, H, W)`` [0, 1] image as PNG, atomically."""
    import io

    from PIL import Image

    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, device: torch.device, max_batches: int) -> dict[str, float]:
    """PSNR (RGB) of the model and of the grey copy on up to ``max_batches`` batches."""
    from torchmetrics.functional.image import peak_signal_noise_ratio as psnr

    was_training = model.training
    model.eval()
    scores, grey_scores = [], []
    for i, (rgb, gray) in enumerate(loader):
        if i >= max_batches:
            break
        pred = colorize_tensor(model, gray, render_size=gray.shape[-1])
        scores.append(psnr(pred, rgb, data_range=1.0).item())
        grey_scores.append(psnr(gray.expand_as(rgb), rgb, data_range=1.0).item())
    model.train(was_training)
    if not scores:
        return {}
    return {"psnr": sum(scores) / len(scores), "psnr_grey": sum(grey_scores) / len(grey_scores)}


@torch.no_grad()
def test_metrics(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 32) -> dict[str, dict]:
    """PSNR and SSIM (both on RGB in [0, 1]) of the model and the grey copy."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    model.eval()
    meters = {
        name: (
            PeakSignalNoiseRatio(data_range=1.0, sync_on_compute=False),
            StructuralSimilarityIndexMeasure(data_range=1.0, sync_on_compute=False),
        )
        for name in ("model", "grey")
    }
    for rgb, gray in DataLoader(dataset, batch_size=batch_size):
        pred = colorize_tensor(model, gray, render_size=gray.shape[-1])
        for name, out in (("model", pred), ("grey", gray.expand_as(rgb))):
            meters[name][0].update(out, rgb)
            meters[name][1].update(out, rgb)
    return {n: {"psnr": p.compute().item(), "ssim": s.compute().item()} for n, (p, s) in meters.items()}


# ---------------------------------------------------------------- the loop


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data``; returns the final metrics.

    With ``resume``, continues from the run folder's latest good checkpoint
    (falling back to an older one if the latest is damaged) exactly where it
    stopped: same data order, optimizer state and step count.
    """
    cfg = config.resolved()
    info, device = init_distributed(cfg.device)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)

    splits = build_splits(cfg.data, cfg.image_size, cfg.seed, cfg.split, cfg.download, cfg.verify_cifar,
                          cfg.crop_min_scale)
    model = create_model(cfg.model, **cfg.model_kwargs)
    if model.fixed_size is not None and cfg.image_size != model.fixed_size:
        raise TrainingError(f"{cfg.model} takes {model.fixed_size}px images, not {cfg.image_size}px")
    if cfg.gan_weight and model.predicts != "ab":
        raise TrainingError(f"gan_weight needs a chroma model (predicts ab); {cfg.model} predicts RGB")
    if cfg.init:
        _init_from(model, Path(cfg.init))
    if cfg.batch_size % info.world:
        raise TrainingError(f"batch size {cfg.batch_size} does not split over {info.world} processes")
    n_train = len(splits.train)
    if n_train == 0:
        raise TrainingError(f"{cfg.data}: the training split is empty")
    batch_size = min(cfg.batch_size, n_train)
    per_epoch = len(epoch_batches(n_train, batch_size, cfg.seed, 0))
    total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * per_epoch

    weights = None
    if cfg.loss == "ce":
        weights = estimate_rebalancing(splits.train, model, cfg.rebalance_mix)
        model.class_weights.copy_(weights)  # saved with the weights: decoding divides them out
    loss_fn = ColorizationLoss(cfg.loss, model, weights)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    disc = disc_optimizer = None
    aux: dict[str, Any] = {}
    if cfg.gan_weight:
        disc = adversarial.PatchDiscriminator().to(device)
        disc_optimizer = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        aux = {"discriminator": disc, "discriminator_optimizer": disc_optimizer}

    step, start_batch, epoch = 0, 0, 0
    if resume:
        state = None
        for ckpt in checkpoint_candidates(out):
            try:
                state, rng = load_training_checkpoint(ckpt, model, optimizer, aux)
                if "torch" in rng:
                    torch.set_rng_state(rng["torch"])
                if info.main:
                    print(f"resuming from {ckpt} (step {state['step']})")
                break
            except CheckpointError as exc:
                if info.main:
                    print(f"warning: skipping damaged checkpoint: {exc}")
        if state is None:
            if info.main:
                print(f"no checkpoint in {out / 'checkpoints'}: starting from scratch")
        else:
            step, epoch, start_batch = state["step"], state["epoch"], state["batch_in_epoch"]

    ddp_model = model
    if info.world > 1:
        if device.type == "cuda":
            # Batch statistics over the global batch, as one process would see them.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    ddp_disc = disc
    if disc is not None and info.world > 1:
        ddp_disc = nn.parallel.DistributedDataParallel(disc, device_ids=[device.index] if device.type == "cuda" else None)

    writer = None
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
        print(f"{cfg.model}: {count_parameters(model):,} parameters; {n_train} training images; "
              f"batch {batch_size} at {cfg.image_size}px; {total_steps} steps on {device}"
              + (f" x {info.world} processes" if info.world > 1 else ""))

    val_loader = DataLoader(splits.val, batch_size=min(16, max(1, len(splits.val))))
    grid_batch = next(iter(DataLoader(splits.val, batch_size=6))) if len(splits.val) else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null_context()

    bar = None
    if info.main and progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, desc=cfg.model, unit="step", dynamic_ncols=True)

    def checkpoint() -> None:
        if info.main:
            rng = {"torch": torch.get_rng_state()}
            save_training_checkpoint(out, model, optimizer, {
                "step": step, "epoch": epoch, "batch_in_epoch": start_batch, "config": asdict(cfg),
            }, rng, aux=aux)

    previous_sigterm = _stop_on_sigterm()
    started, cpu_started = time.monotonic(), time.process_time()
    bad_steps = 0
    loss_value: float | None = None  # None until a step has run (JSON has no NaN)
    model.train()
    try:
        while step < total_steps:
            set_epoch(splits.train, epoch)
            batches = epoch_batches(n_train, batch_size, cfg.seed, epoch)
            # Each rank takes every world-th sample of each global batch (not a
            # DistributedSampler's shard of the whole epoch), so N processes
            # step through exactly the batches one process would.
            mine = [b[info.rank :: info.world] for b in batches[start_batch:]]
            loader = DataLoader(splits.train, batch_sampler=mine, num_workers=cfg.workers,
                                pin_memory=device.type == "cuda", persistent_workers=False)
            for indices, (rgb, gray) in zip(mine, loader):
                # Hints drawn per sample, seeded by where it sits in the run (as augmentation is).
                hint_gens = [sample_generator(cfg.seed + 1, epoch, i) for i in indices]
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, total_steps, cfg)
                rgb, gray = rgb.to(device, non_blocking=True), gray.to(device, non_blocking=True)
                adv_value = None
                with autocast:
                    if disc is None:
                        loss = loss_fn(ddp_model, rgb, gray, hint_gens=hint_gens)
                    else:
                        loss, raw, ab_true = loss_fn(ddp_model, rgb, gray, with_output=True, hint_gens=hint_gens)
                        l_small, ab_real = adversarial.discriminator_inputs(
                            normalize_l(gray_to_l(gray)), ab_true, raw.shape[-2:])
                        ab_fake = normalize_ab(model.decode(raw))
                        adversarial.set_requires_grad(disc, False)
                        adv = adversarial.generator_loss(disc, l_small, ab_fake)
                        adv_value = adv.item()
                        loss = loss + cfg.gan_weight * adv
                optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    bad_steps += 1
                    if bad_steps >= cfg.max_bad_steps:
                        raise TrainingError(f"loss was not finite for {bad_steps} steps in a row at step {step}; "
                                            "stopping (lower the learning rate?). The last good checkpoint is kept.")
                    if info.main:
                        print(f"warning: non-finite loss at step {step}; step skipped")
                    start_batch += 1
                    continue
                bad_steps = 0
                loss.backward()
                optimizer.step()
                if disc is not None:
                    adversarial.set_requires_grad(disc, True)
                    with autocast:
                        d_loss = adversarial.discriminator_loss(ddp_disc, l_small, ab_real, ab_fake)
                    for group in disc_optimizer.param_groups:
                        group["lr"] = lr_at(step, total_steps, cfg)
                    disc_optimizer.zero_grad(set_to_none=True)
                    d_loss.backward()
                    disc_optimizer.step()
                step += 1
                start_batch += 1
                loss_value = loss.item()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4f}", epoch=epoch)
                if writer is not None and step % cfg.log_every == 0:
                    writer.add_scalar("train/loss", loss_value, step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                    if adv_value is not None:
                        writer.add_scalar("train/gan_generator", adv_value, step)
                        writer.add_scalar("train/gan_discriminator", d_loss.item(), step)
                if info.main and (step % cfg.eval_every == 0 or step == total_steps):
                    _report(model, val_loader, grid_batch, device, cfg, writer, out, step)
                    model.train()
                if step % cfg.checkpoint_every == 0 or step == total_steps:
                    checkpoint()
                if cfg.time_limit_min is not None and time.monotonic() - started > cfg.time_limit_min * 60:
                    raise _TimeUp()
                if step >= total_steps:
                    break
            if step < total_steps or start_batch >= len(batches):
                epoch += 1
                start_batch = 0
    except (_TimeUp, KeyboardInterrupt) as exc:
        checkpoint()
        if info.main:
            why = "time limit reached" if isinstance(exc, _TimeUp) else "interrupted"
            print(f"\n{why} at step {step}: checkpoint saved; continue with --resume")
    finally:
        if bar is not None:
            bar.close()
        if previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)

    result: dict[str, Any] = {
        "step": step,
        "loss": loss_value,
        "train_seconds": time.monotonic() - started,
        "train_cpu_seconds": time.process_time() - cpu_started,  # all threads: the compute actually used
    }
    if info.world > 1:
        spread = weights_spread_across_ranks(model)
        if info.main:
            print(f"weights identical across {info.world} ranks: {spread == 0} (max difference {spread:.3g})")
        result["rank_weight_spread"] = spread
    if info.main:
        save_model(model, out, {"train": asdict(cfg), "step": step})
        metrics = test_metrics(model, splits.test, device) if len(splits.test) else {}
        result["test"] = metrics
        (out / "test_metrics.json").write_text(json.dumps(result, indent=2))
        if metrics:
            print(f"\ntest split ({len(splits.test)} images at {cfg.image_size}px):")
            print("| output | PSNR (dB) | SSIM (RGB) |\n|---|---|---|")
            for name in ("model", "grey"):
                label = cfg.model if name == "model" else "grey copy"
                print(f"| {label} | {metrics[name]['psnr']:.2f} | {metrics[name]['ssim']:.4f} |")
        if writer is not None:
            writer.close()
    if info.world > 1:
        dist.barrier()
    return result


def _init_from(model: nn.Module, folder: Path) -> None:
    """Start from a trained model's weights (same architecture and size)."""
    try:
        source = load_model(folder)
    except CheckpointError as exc:
        raise TrainingError(f"init: {exc}") from exc
    if source.registry_name != model.registry_name:
        raise TrainingError(f"init: {folder} holds a {source.registry_name}, not a {model.registry_name}")
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        raise TrainingError(f"init: {folder} does not fit {model.registry_name} {model.registry_kwargs} ({exc})") from exc


class _TimeUp(Exception):
    pass


def _stop_on_sigterm():
    """Make SIGTERM (kill, a scheduler's pre-emption) stop training like Ctrl-C:
    with a checkpoint. Background jobs ignore SIGINT, so this is their way out."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


class _null_context:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _report(model, val_loader, grid_batch, device, cfg, writer, out: Path, step: int) -> None:
    scores = validate(model, val_loader, device, cfg.eval_batches)
    if scores and writer is not None:
        writer.add_scalar("val/psnr", scores["psnr"], step)
        writer.add_scalar("val/psnr_grey_copy", scores["psnr_grey"], step)
    if grid_batch is not None:
        model.eval()
        grid = image_grid(model, *grid_batch)
        save_png(grid, out / "grid.png")
        if writer is not None:
            writer.add_image("val/gray_prediction_truth", grid, step)
