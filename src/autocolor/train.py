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
from autocolor.atomic import atomic_write_text
from autocolor.checkpoint import (
    CheckpointError,
    checkpoint_candidates,
    load_model,
    load_training_checkpoint,
    save_model,
    save_training_checkpoint,
)
from autocolor.color import gray_to_l, normalize_ab, normalize_l, rgb_to_lab
from autocolor.data import build_splits, sample_generator, set_epoch
from autocolor.distributed import DistInfo, any_rank, process_group, weights_spread_across_ranks
from autocolor.errors import AutocolorError
from autocolor.guide import simulate_guide
from autocolor.models import count_parameters, create_model
from autocolor.quantize import bin_counts, rebalanced_cross_entropy, rebalancing_weights
from autocolor.validation import image_grid, save_png, test_metrics, validate

# Per-model defaults follow the reference designs (batch 100 at 32 px for the
# CAE, 32 at 150 px for the U-Net); the chroma model trains on 128 px crops.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "cae": {"batch_size": 100, "image_size": 32, "loss": "mse"},
    "unet-rgb": {"batch_size": 32, "image_size": 150, "loss": "mse"},
    "chroma-unet": {"batch_size": 16, "image_size": 128, "loss": "ce"},
}
LOSSES = ("mse", "ce", "huber")


class TrainingError(AutocolorError, RuntimeError):
    """Training settings or data that cannot work, with what to change."""


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
    composite: float = 0.0  # share of cut-out samples given a whole-scene background (folder data)
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
        if not 0.0 <= cfg.composite <= 1.0:
            raise TrainingError(f"composite must be in [0, 1], got {cfg.composite}")
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
            guide = simulate_guide(lightness, ab, gens, unwrapped.bins.to(ab.device), reach=unwrapped.spread_reach)
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


# ---------------------------------------------------------------- the loop, in named steps


@dataclass
class _Run:
    """One training run: what :func:`_set_up` builds and the steps below advance."""

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    out: Path
    splits: Any
    model: nn.Module  # the model itself (what is saved)
    loss_fn: ColorizationLoss
    optimizer: torch.optim.Optimizer
    n_train: int
    batch_size: int
    total_steps: int
    disc: nn.Module | None = None  # the PatchGAN discriminator, when gan_weight > 0
    disc_optimizer: torch.optim.Optimizer | None = None
    aux: dict[str, Any] = field(default_factory=dict)  # saved beside the model in checkpoints
    ddp_model: nn.Module | None = None  # what the forward pass calls (DDP-wrapped under torchrun)
    ddp_disc: nn.Module | None = None
    step: int = 0
    epoch: int = 0
    start_batch: int = 0  # the next global batch of the epoch
    bad_steps: int = 0  # consecutive non-finite losses
    loss_value: float | None = None  # None until a step has run (JSON has no NaN)
    writer: Any = None  # TensorBoard, on rank 0
    bar: Any = None  # tqdm, on rank 0 with progress
    val_loader: DataLoader | None = None
    grid_batch: tuple[torch.Tensor, torch.Tensor] | None = None
    autocast: Any = None
    started: float = 0.0
    cpu_started: float = 0.0


@dataclass
class _GanTerms:
    """What the discriminator's own step needs from the colorizer's forward pass."""

    l_small: torch.Tensor
    ab_real: torch.Tensor
    ab_fake: torch.Tensor
    generator_loss: float


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data``; returns the final metrics.

    With ``resume``, continues from the run folder's latest good checkpoint
    (falling back to an older one if the latest is damaged) exactly where it
    stopped: same data order, optimizer state and step count.
    """
    cfg = config.resolved()
    with process_group(cfg.device) as (info, device):
        run = _set_up(cfg, info, device)
        if resume:
            _resume(run)
        _wrap_distributed(run)
        _open_logs(run, progress)
        _train_until_done(run)
        return _finish(run)


def _set_up(cfg: TrainConfig, info: DistInfo, device: torch.device) -> _Run:
    """Data, model, loss and optimizers (and the discriminator), all from the seed."""
    torch.manual_seed(cfg.seed)
    splits = build_splits(cfg.data, cfg.image_size, cfg.seed, cfg.split, cfg.download, cfg.verify_cifar,
                          cfg.crop_min_scale, cfg.composite)
    model = _build_model(cfg)
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
    run = _Run(cfg, info, device, Path(cfg.out), splits, model, loss_fn, optimizer, n_train, batch_size, total_steps)
    if cfg.gan_weight:
        run.disc = adversarial.PatchDiscriminator().to(device)
        run.disc_optimizer = torch.optim.Adam(run.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        run.aux = {"discriminator": run.disc, "discriminator_optimizer": run.disc_optimizer}
    return run


def _build_model(cfg: TrainConfig) -> nn.Module:
    model = create_model(cfg.model, **cfg.model_kwargs)
    if model.fixed_size is not None and cfg.image_size != model.fixed_size:
        raise TrainingError(f"{cfg.model} takes {model.fixed_size}px images, not {cfg.image_size}px")
    if cfg.gan_weight and model.predicts != "ab":
        raise TrainingError(f"gan_weight needs a chroma model (predicts ab); {cfg.model} predicts RGB")
    if cfg.init:
        _init_from(model, Path(cfg.init))
    return model


def _resume(run: _Run) -> None:
    """Continue from the newest readable checkpoint: weights, optimizers, RNG and position."""
    state = None
    for ckpt in checkpoint_candidates(run.out):
        try:
            state, rng = load_training_checkpoint(ckpt, run.model, run.optimizer, run.aux)
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
            if run.info.main:
                print(f"resuming from {ckpt} (step {state['step']})")
            break
        except CheckpointError as exc:
            if run.info.main:
                print(f"warning: skipping damaged checkpoint: {exc}")
    if state is None:
        if run.info.main:
            print(f"no checkpoint in {run.out / 'checkpoints'}: starting from scratch")
    else:
        run.step, run.epoch, run.start_batch = state["step"], state["epoch"], state["batch_in_epoch"]


def _wrap_distributed(run: _Run) -> None:
    run.ddp_model, run.ddp_disc = run.model, run.disc
    if run.info.world == 1:
        return
    device_ids = [run.device.index] if run.device.type == "cuda" else None
    if run.device.type == "cuda":
        # Batch statistics over the global batch, as one process would see them.
        run.model = nn.SyncBatchNorm.convert_sync_batchnorm(run.model)
    run.ddp_model = nn.parallel.DistributedDataParallel(run.model, device_ids=device_ids)
    if run.disc is not None:
        run.ddp_disc = nn.parallel.DistributedDataParallel(run.disc, device_ids=device_ids)


def _open_logs(run: _Run, progress: bool) -> None:
    """The run folder, TensorBoard and the progress bar (rank 0), and the validation batches."""
    cfg, info = run.cfg, run.info
    if info.main:
        run.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.out / "train_config.json", json.dumps(asdict(cfg), indent=2))
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(str(run.out / "tensorboard"))
        print(f"{cfg.model}: {count_parameters(run.model):,} parameters; {run.n_train} training images; "
              f"batch {run.batch_size} at {cfg.image_size}px; {run.total_steps} steps on {run.device}"
              + (f" x {info.world} processes" if info.world > 1 else ""))
    val = run.splits.val
    run.val_loader = DataLoader(val, batch_size=min(16, max(1, len(val))))
    run.grid_batch = next(iter(DataLoader(val, batch_size=6))) if len(val) else None
    run.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if run.device.type == "cuda" else _null_context()
    if info.main and progress:
        from tqdm import tqdm

        run.bar = tqdm(total=run.total_steps, initial=run.step, desc=cfg.model, unit="step", dynamic_ncols=True)


def _train_until_done(run: _Run) -> None:
    """Epochs until the last step, a time limit, Ctrl-C or SIGTERM (the last three with a checkpoint)."""
    previous_sigterm = _stop_on_sigterm()
    run.started, run.cpu_started = time.monotonic(), time.process_time()
    run.model.train()
    try:
        while run.step < run.total_steps:
            _run_epoch(run)
    except (_TimeUp, KeyboardInterrupt) as exc:
        _save_checkpoint(run)
        if run.info.main:
            why = "time limit reached" if isinstance(exc, _TimeUp) else "interrupted"
            print(f"\n{why} at step {run.step}: checkpoint saved; continue with --resume")
    finally:
        if run.bar is not None:
            run.bar.close()
        if previous_sigterm is not None:
            import signal

            signal.signal(signal.SIGTERM, previous_sigterm)


def _run_epoch(run: _Run) -> None:
    """The rest of the current epoch (all of it, unless resuming mid-epoch or at the last step)."""
    cfg, info = run.cfg, run.info
    set_epoch(run.splits.train, run.epoch)
    batches = epoch_batches(run.n_train, run.batch_size, cfg.seed, run.epoch)
    # Each rank takes every world-th sample of each global batch (not a
    # DistributedSampler's shard of the whole epoch), so N processes
    # step through exactly the batches one process would.
    mine = [b[info.rank :: info.world] for b in batches[run.start_batch :]]
    loader = DataLoader(run.splits.train, batch_sampler=mine, num_workers=cfg.workers,
                        pin_memory=run.device.type == "cuda", persistent_workers=False)
    for indices, (rgb, gray) in zip(mine, loader):
        if _run_batch(run, indices, rgb, gray):
            _after_step(run)
        if run.step >= run.total_steps:
            break
    if run.step < run.total_steps or run.start_batch >= len(batches):
        run.epoch += 1
        run.start_batch = 0


def _run_batch(run: _Run, indices: list[int], rgb: torch.Tensor, gray: torch.Tensor) -> bool:
    """One optimizer step on one batch; False when the ranks agreed to skip it (a non-finite loss)."""
    cfg = run.cfg
    # Hints drawn per sample, seeded by where it sits in the run (as augmentation is).
    hint_gens = [sample_generator(cfg.seed + 1, run.epoch, i) for i in indices]
    lr = lr_at(run.step, run.total_steps, cfg)
    _set_lr(run.optimizer, lr)
    rgb, gray = rgb.to(run.device, non_blocking=True), gray.to(run.device, non_blocking=True)
    with run.autocast:
        loss, gan = _forward(run, rgb, gray, hint_gens)
    run.optimizer.zero_grad(set_to_none=True)
    # Every rank must take the same branch: DDP's backward waits for all of them.
    if any_rank(not torch.isfinite(loss), run.info):
        _skip_step(run)
        return False
    run.bad_steps = 0
    loss.backward()
    run.optimizer.step()
    d_loss = _discriminator_step(run, gan, lr) if gan is not None else None
    run.step += 1
    run.start_batch += 1
    run.loss_value = loss.item()
    _log_step(run, gan, d_loss)
    return True


def _forward(run: _Run, rgb: torch.Tensor, gray: torch.Tensor, hint_gens: list[torch.Generator]):
    """The colorizer's loss, plus the PatchGAN generator term when the run has a discriminator."""
    if run.disc is None:
        return run.loss_fn(run.ddp_model, rgb, gray, hint_gens=hint_gens), None
    loss, raw, ab_true = run.loss_fn(run.ddp_model, rgb, gray, with_output=True, hint_gens=hint_gens)
    l_small, ab_real = adversarial.discriminator_inputs(normalize_l(gray_to_l(gray)), ab_true, raw.shape[-2:])
    ab_fake = normalize_ab(run.model.decode(raw))
    adversarial.set_requires_grad(run.disc, False)
    adv = adversarial.generator_loss(run.disc, l_small, ab_fake)
    return loss + run.cfg.gan_weight * adv, _GanTerms(l_small, ab_real, ab_fake, adv.item())


def _discriminator_step(run: _Run, gan: _GanTerms, lr: float) -> torch.Tensor:
    adversarial.set_requires_grad(run.disc, True)
    with run.autocast:
        d_loss = adversarial.discriminator_loss(run.ddp_disc, gan.l_small, gan.ab_real, gan.ab_fake)
    _set_lr(run.disc_optimizer, lr)
    run.disc_optimizer.zero_grad(set_to_none=True)
    d_loss.backward()
    run.disc_optimizer.step()
    return d_loss


def _skip_step(run: _Run) -> None:
    run.bad_steps += 1
    if run.bad_steps >= run.cfg.max_bad_steps:
        raise TrainingError(f"loss was not finite for {run.bad_steps} steps in a row at step {run.step}; "
                            "stopping (lower the learning rate?). The last good checkpoint is kept.")
    if run.info.main:
        print(f"warning: non-finite loss at step {run.step}; step skipped")
    run.start_batch += 1


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _log_step(run: _Run, gan: _GanTerms | None, d_loss: torch.Tensor | None) -> None:
    if run.bar is not None:
        run.bar.update(1)
        run.bar.set_postfix(loss=f"{run.loss_value:.4f}", epoch=run.epoch)
    if run.writer is not None and run.step % run.cfg.log_every == 0:
        run.writer.add_scalar("train/loss", run.loss_value, run.step)
        run.writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], run.step)
        if gan is not None:
            run.writer.add_scalar("train/gan_generator", gan.generator_loss, run.step)
            run.writer.add_scalar("train/gan_discriminator", d_loss.item(), run.step)


def _after_step(run: _Run) -> None:
    """Validation, checkpoint and the time limit, each when it is due."""
    cfg, last = run.cfg, run.step == run.total_steps
    if run.info.main and (run.step % cfg.eval_every == 0 or last):
        _validate(run)
        run.model.train()
    if run.step % cfg.checkpoint_every == 0 or last:
        _save_checkpoint(run)
    # Agreed by all ranks, so that none stops while the others wait for it.
    timed_out = cfg.time_limit_min is not None and time.monotonic() - run.started > cfg.time_limit_min * 60
    if any_rank(timed_out, run.info):
        raise _TimeUp()


def _validate(run: _Run) -> None:
    """Validation PSNR and the gray | prediction | truth grid, to TensorBoard and ``grid.png``."""
    model, writer = run.model, run.writer
    scores = validate(model, run.val_loader, run.device, run.cfg.eval_batches)
    if scores and writer is not None:
        writer.add_scalar("val/psnr", scores["psnr"], run.step)
        writer.add_scalar("val/psnr_gray_copy", scores["psnr_gray"], run.step)
    if run.grid_batch is not None:
        model.eval()
        grid = image_grid(model, *run.grid_batch)
        save_png(grid, run.out / "grid.png")
        if writer is not None:
            writer.add_image("val/gray_prediction_truth", grid, run.step)


def _save_checkpoint(run: _Run) -> None:
    """Rank 0 writes the checkpoint: all ranks hold the same weights."""
    if run.info.main:
        rng = {"torch": torch.get_rng_state()}
        save_training_checkpoint(run.out, run.model, run.optimizer, {
            "step": run.step, "epoch": run.epoch, "batch_in_epoch": run.start_batch, "config": asdict(run.cfg),
        }, rng, aux=run.aux)


def _finish(run: _Run) -> dict[str, Any]:
    """The final weights and the test split's scores (rank 0); returns what it wrote to ``test_metrics.json``."""
    info = run.info
    result: dict[str, Any] = {
        "step": run.step,
        "loss": run.loss_value,
        "train_seconds": time.monotonic() - run.started,
        "train_cpu_seconds": time.process_time() - run.cpu_started,  # all threads: the compute actually used
    }
    if info.world > 1:
        spread = weights_spread_across_ranks(run.model)
        if info.main:
            print(f"weights identical across {info.world} ranks: {spread == 0} (max difference {spread:.3g})")
        result["rank_weight_spread"] = spread
    if info.main:
        save_model(run.model, run.out, {"train": asdict(run.cfg), "step": run.step})
        test = run.splits.test
        result["test"] = test_metrics(run.model, test, run.device) if len(test) else {}
        result["test_images"] = len(test)
        atomic_write_text(run.out / "test_metrics.json", json.dumps(result, indent=2))
        if run.writer is not None:
            run.writer.close()
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


