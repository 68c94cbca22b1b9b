"""The ``autocolor`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="registered model name (see `autocolor models`)")
    p.add_argument("--data", required=True, help="cifar10:ROOT, pairs:DIR (color/ + gray/) or folder:DIR")
    p.add_argument("--out", required=True, help="run folder for checkpoints, logs, grid.png and final weights")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--epochs", type=int, help="passes over the training split")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the model's reference value)")
    p.add_argument("--image-size", type=int, help="training crop side in pixels (default: per model)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay")
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant", help="learning-rate schedule")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps (cosine schedule)")
    p.add_argument("--loss", choices=["mse", "ce", "huber"], help="loss (default: mse for RGB models, ce for chroma)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="model keyword argument, e.g. width=48 or head=regression (repeatable)")
    p.add_argument("--rebalance-mix", type=float, default=0.5, help="class-rebalancing lambda for the ce loss")
    p.add_argument("--gan-weight", type=float, default=0.0,
                   help="add a PatchGAN term with this weight (chroma models; 0: off)")
    p.add_argument("--init", metavar="FOLDER", help="start from a trained model folder's weights (fine-tuning)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, initialization and augmentation")
    p.add_argument("--split", choices=["random", "official"], default="random",
                   help="cifar10: 80/20 of all 60k images, or the official 50k/10k")
    p.add_argument("--download", action="store_true", help="cifar10: download when missing (needs internet)")
    p.add_argument("--no-verify", action="store_true", help="cifar10: skip checksums (custom or test batches)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--eval-every", type=int, default=250, help="steps between validation PSNR and grid images")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, ...")
    p.add_argument("--time-limit", type=float, metavar="MINUTES", help="stop with a checkpoint after this long")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _run_train(args: argparse.Namespace) -> int:
    from autocolor.train import TrainConfig, train

    kwargs = {}
    for item in args.model_arg:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --model-arg {item!r} is not KEY=VALUE")
        kwargs[key] = _parse_value(value)
    cfg = TrainConfig(
        model=args.model, data=args.data, out=args.out, steps=args.steps, epochs=args.epochs,
        batch_size=args.batch_size, image_size=args.image_size, model_kwargs=kwargs, loss=args.loss,
        lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule, warmup_steps=args.warmup_steps,
        rebalance_mix=args.rebalance_mix, gan_weight=args.gan_weight, init=args.init, seed=args.seed, split=args.split, download=args.download,
        verify_cifar=not args.no_verify, checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
        workers=args.workers, device=args.device, time_limit_min=args.time_limit,
    )
    train(cfg, resume=args.resume, progress=not args.no_progress)
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    photos = dsub.add_parser("photos", help="build the photo corpus from Debian packages (needs apt-get)")
    photos.add_argument("dir", type=Path, help="output folder (train/, val/, test/, manifest)")
    photos.add_argument("--cache", type=Path, help="where downloaded .deb files are kept")
    photos.add_argument("--max-side", type=int, default=512, help="longest side of the stored photos")


def _run_data(args: argparse.Namespace) -> int:
    from autocolor.photos import build_photo_corpus

    build_photo_corpus(args.dir, cache_dir=args.cache, max_side=args.max_side)
    return 0


def _run_models(args: argparse.Namespace) -> int:
    from autocolor.models import available_models, count_parameters, create_model

    for name in available_models():
        model = create_model(name)
        print(f"{name:14s} {count_parameters(model):>10,} parameters  predicts {model.predicts}")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web demo: colorize photos in the browser",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860, help="TCP port")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="model folder to offer (repeatable; default: the installed default weights)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image accepted, in pixels")
    p.add_argument("--max-file-size", default="25mb", help="largest upload accepted, e.g. 10mb")
    p.add_argument("--max-images", type=int, default=8, help="images colorized per request")
    p.add_argument("--concurrency", type=int, default=1, help="requests colorized at once")
    p.add_argument("--queue-size", type=int, default=20, help="requests allowed to wait; more are turned away")


def _run_serve(args: argparse.Namespace) -> int:
    from autocolor.web import WebConfig, model_choices, serve

    models = model_choices(args.model)
    if not models:
        raise SystemExit("error: no default weights installed; pass --model PATH (a folder with model.safetensors)")
    config = WebConfig(
        models=models, device=args.device, max_pixels=args.max_pixels, max_file_size=args.max_file_size,
        max_images=args.max_images, concurrency=args.concurrency, queue_size=args.queue_size,
    )
    serve(config, host=args.host, port=args.port)
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="compare trained models and the grey copy on a data split",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", required=True,
                   help="comma-separated specs: grey, default, a model folder, or LABEL=FOLDER (e.g. cae=runs/cae)")
    p.add_argument("--data", required=True, help="cifar10:ROOT, pairs:DIR (color/ + gray/) or folder:DIR")
    p.add_argument("--split", choices=["test", "val"], default="test", help="which split to evaluate on")
    p.add_argument("--sizes", default="32,256", help="comma-separated center-crop sides in pixels")
    p.add_argument("--n", type=int, default=100, help="images drawn (seeded) from the split; 0 means all")
    p.add_argument("--saturations", default="0,0.5,0.75,1,1.25,1.5",
                   help="comma-separated factors on ab for the colorfulness trade-off (1 is always added)")
    p.add_argument("--out", type=Path, help="folder for results.md, results.json and grid_SIZE.png")
    p.add_argument("--seed", type=int, default=0, help="seed for the split and the image sample")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--grid-rows", type=int, default=8, help="images shown in each grid")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")


def _run_evaluate(args: argparse.Namespace) -> int:
    from autocolor.evaluate import EvaluationError, evaluate, format_markdown

    def numbers(text: str, kind, flag: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise SystemExit(f"error: {flag} {text!r} is not a comma-separated list of numbers") from None

    try:
        report = evaluate(
            models=[m for m in args.models.split(",") if m.strip()], data=args.data,
            sizes=numbers(args.sizes, int, "--sizes"), n=args.n or None, seed=args.seed, split=args.split,
            saturations=numbers(args.saturations, float, "--saturations"), out_dir=args.out,
            batch_size=args.batch_size, grid_rows=args.grid_rows, device=args.device,
        )
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_markdown(report), end="")
    if args.out is not None:
        print(f"wrote {args.out / 'results.md'}, results.json and grid PNGs")
    return 0


def _add_colorize(sub: argparse._SubParsersAction) -> None:
    from autocolor.imageio import DEFAULT_MAX_PIXELS, OUTPUT_FORMATS
    from autocolor.predict import DEFAULT_RENDER_SIZE
    from autocolor.video import DEFAULT_CRF

    p = sub.add_parser("colorize", help="colorize photos and videos: files, folders (recursively) and globs",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image or video files, folders or glob patterns")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder; folder layout is kept")
    p.add_argument("--model", default="default", help="model folder (model.safetensors + config.json) or 'default'")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch", help="inference engine")
    p.add_argument("--device", default="cpu", help="torch backend: cpu, cuda, cuda:1, ...")
    p.add_argument("--render-size", type=int, default=None,
                   help=f"working resolution in pixels per side (chroma models: {DEFAULT_RENDER_SIZE}; "
                        "RGB models: full size)")
    p.add_argument("--saturation", type=float, default=1.0, help="chroma scale, 1 = as predicted")
    p.add_argument("--format", choices=list(OUTPUT_FORMATS), default=None,
                   help="output format (default: the input's own; GIF becomes PNG)")
    p.add_argument("--quality", type=int, default=92, help="JPEG/WebP quality")
    p.add_argument("--crf", type=int, default=DEFAULT_CRF,
                   help="video: x264 quality factor, lower is finer (18 keeps chroma crisp; 23 blurs it)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that already exist (default: skip them)")
    p.add_argument("--keep-color", action="store_true", help="copy color inputs as they are instead of recolorizing")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse larger images (decompression bombs)")
    p.add_argument("--batch-size", type=int, default=8, help="images of one size colorized together")
    p.add_argument("--workers", type=int, default=2, help="threads decoding and encoding beside the model")
    p.add_argument("--threads", type=int, default=0,
                   help="PyTorch intra-op threads; 0: all cores (fastest on an idle machine; 1 is faster when "
                        "other work shares a small CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_colorize(args: argparse.Namespace) -> int:
    import torch

    from autocolor.distributed import all_sum, init_distributed, shard
    from autocolor.inference import Colorizer, colorize_files, plan_jobs

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    jobs, problems = plan_jobs(args.paths, args.out, args.format)
    for path, reason in problems:
        print(f"{path}: {reason}", file=sys.stderr)
    if not jobs:
        print("error: nothing to colorize", file=sys.stderr)
        return 1
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"error: {args.out}: cannot create the output folder ({exc.strerror or exc})", file=sys.stderr)
        return 2
    # Under torchrun each rank takes every world-th file (each done exactly once)
    # on its own GPU; a lone process is a world of one.
    info, device = init_distributed(args.device)
    jobs = shard(jobs, info)
    problems = problems if info.main else []
    colorizer = Colorizer.load(args.model, device=str(device), backend=args.backend)
    summary = colorize_files(
        colorizer, jobs, render_size=args.render_size, saturation=args.saturation, keep_color=args.keep_color,
        overwrite=args.overwrite, max_pixels=args.max_pixels, quality=args.quality, batch_size=args.batch_size,
        workers=args.workers, progress=not args.no_progress and info.main, crf=args.crf,
    )
    summary.failed[:0] = problems
    if info.world > 1:
        print(f"rank {info.rank}: {summary.line()}", file=sys.stderr)
        done, skipped, failed = all_sum([summary.done, summary.skipped, len(summary.failed)], info)
        if info.main:
            print(f"all {info.world} ranks: done {done:.0f}, skipped {skipped:.0f} (already written), "
                  f"failed {failed:.0f}", file=sys.stderr)
    else:
        print(summary.line(), file=sys.stderr)
    return 1 if summary.failed else 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    from autocolor.predict import DEFAULT_RENDER_SIZE

    p = sub.add_parser("export", help="export a chroma model's network to ONNX",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--onnx", required=True, type=Path, help="ONNX file to write")
    p.add_argument("--model", default="default", help="model folder (model.safetensors + config.json) or 'default'")
    p.add_argument("--render-size", type=int, default=DEFAULT_RENDER_SIZE,
                   help="side of the example input traced (height and width stay dynamic)")


def _run_export(args: argparse.Namespace) -> int:
    from autocolor.inference import Colorizer
    from autocolor.onnx_export import export_onnx

    colorizer = Colorizer.load(args.model)
    try:
        path = export_onnx(colorizer.model, args.onnx, args.render_size)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="colorize the bundled sample photos and write a before/after image",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("outputs"), help="output folder")
    p.add_argument("--model", default="default", help="model folder or 'default'")


def _run_demo(args: argparse.Namespace) -> int:
    from autocolor.demo import run_demo

    run_demo(args.out, args.model)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autocolor", description="Colorize grayscale photos; train and compare models.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_data(sub)
    sub.add_parser("models", help="list registered models with their parameter counts")
    _add_serve(sub)
    _add_evaluate(sub)
    _add_colorize(sub)
    _add_export(sub)
    _add_demo(sub)
    return parser


COMMANDS = {"train": _run_train, "data": _run_data, "models": _run_models, "serve": _run_serve, "evaluate": _run_evaluate,
            "colorize": _run_colorize, "export": _run_export, "demo": _run_demo}


def main(argv: list[str] | None = None) -> int:
    from autocolor.errors import user_errors

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
