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
    p.add_argument("--crop-min-scale", type=float, default=0.35,
                   help="smallest training crop as a share of the photo's area (small: objects seen larger)")
    p.add_argument("--composite", type=float, default=0.0,
                   help="share of cut-outs (objects on flat gray) pasted onto a whole-scene training photo")
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
    from autocolor.validation import format_test_table

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
        rebalance_mix=args.rebalance_mix, crop_min_scale=args.crop_min_scale, composite=args.composite,
        gan_weight=args.gan_weight,
        init=args.init, seed=args.seed, split=args.split, download=args.download,
        verify_cifar=not args.no_verify, checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
        workers=args.workers, device=args.device, time_limit_min=args.time_limit,
    )
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    if result.get("test"):  # rank 0 only, and only when there is a test split
        print(f"\ntest split ({result['test_images']} images):\n{format_test_table(result['test'], args.model)}")
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
    from autocolor.settings import PORT

    p = sub.add_parser("serve", help="web demo: colorize photos in the browser",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=_bounded(PORT), default=7860, help="TCP port")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="model folder to offer (repeatable; default: the installed default weights)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image accepted, in pixels")
    p.add_argument("--max-file-size", default="25mb", help="largest upload accepted, e.g. 10mb")
    p.add_argument("--max-request-pixels", type=int, default=60_000_000,
                   help="pixels colorized per request, all its images together")
    p.add_argument("--max-images", type=int, default=8, help="images per request (and files per upload)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="images colorized at once; waiting visitors take turns, least compute used first")
    p.add_argument("--workers", type=int, default=4, help="requests in progress at once (waiting for a turn)")
    p.add_argument("--queue-size", type=int, default=20, help="requests allowed to wait; more are turned away")
    p.add_argument("--upload-files", type=int, default=100, help="files one visitor may upload per window")
    p.add_argument("--upload-mb", type=int, default=300, help="megabytes one visitor may upload per window")
    p.add_argument("--upload-window", type=int, default=600, help="the upload quota's window, in seconds")


def _run_serve(args: argparse.Namespace) -> int:
    from autocolor.web import WebConfig, model_choices, serve

    models = model_choices(args.model)
    if not models:
        raise SystemExit("error: no default weights installed; pass --model PATH (a folder with model.safetensors)")
    config = WebConfig(
        models=models, device=args.device, max_pixels=args.max_pixels, max_file_size=args.max_file_size,
        max_images=args.max_images, concurrency=args.concurrency, queue_size=args.queue_size,
        max_request_pixels=max(args.max_request_pixels, args.max_pixels), workers=args.workers,
        upload_files=args.upload_files, upload_mb=args.upload_mb, upload_window_s=args.upload_window,
    )
    serve(config, host=args.host, port=args.port)
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="compare trained models and the gray copy on a data split",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", required=True,
                   help="comma-separated specs: gray, default, a model folder, or LABEL=FOLDER (e.g. cae=runs/cae)")
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
    p.add_argument("--hint-points", metavar="COUNTS",
                   help="instead: guided colorization with this many simulated points per photo, e.g. "
                        "0,1,2,5,10,20,50 (5x5 patch means of the truth, at the first size); models may include levin")
    p.add_argument("--whole-photos", action="store_true",
                   help="instead: score whole photos of a folder: corpus (per category, faces with and without the "
                        "face prior, neutral surfaces, render sizes); --out also gets faces.jpg and scenes.jpg grids")


def _numbers(text: str, kind, flag: str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: {flag} {text!r} is not a comma-separated list of numbers") from None


def _run_evaluate_hints(args: argparse.Namespace) -> int:
    from autocolor.evaluate_hints import evaluate_hints, format_hints_markdown

    report = evaluate_hints(
        models=[m for m in args.models.split(",") if m.strip()], data=args.data,
        size=_numbers(args.sizes, int, "--sizes")[0], counts=_numbers(args.hint_points, int, "--hint-points"),
        n=args.n or None, seed=args.seed, split=args.split, batch_size=args.batch_size, out_dir=args.out,
    )
    print(format_hints_markdown(report), end="")
    if args.out is not None:
        print(f"wrote {args.out / 'hints.md'}, hints.json and hints.png")
    return 0


def _add_tune(sub: argparse._SubParsersAction) -> None:
    from autocolor.settings import TUNE_BAND as DEFAULT_BAND
    from autocolor.settings import TUNE_CONFIDENCE_POWERS, TUNE_FUSION_SIZES
    from autocolor.settings import TUNE_HINT_SCALES
    from autocolor.settings import TUNE_SCALES as DEFAULT_SCALES
    from autocolor.settings import TUNE_TEMPERATURES as DEFAULT_TEMPERATURES

    p = sub.add_parser("tune", help="choose a chroma model's decoding (temperature, chroma scale) on the val split",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", type=Path, help="model folder (model.safetensors + config.json)")
    p.add_argument("--data", required=True, help="folder:DIR (as autocolor data photos writes it)")
    p.add_argument("--split", default="val", choices=["val", "train"], help="never test: it is for reporting")
    p.add_argument("--temperatures", default=",".join(map(str, DEFAULT_TEMPERATURES)), help="comma-separated")
    p.add_argument("--scales", default=",".join(map(str, DEFAULT_SCALES)), help="comma-separated chroma scales")
    p.add_argument("--confidence-powers", default=",".join(map(str, TUNE_CONFIDENCE_POWERS)),
                   help="comma-separated powers of the hue agreement that shrinks unsure chroma (0: off)")
    p.add_argument("--fusion-sizes", default=",".join(map(str, TUNE_FUSION_SIZES)),
                   help="comma-separated render sizes whose prediction is averaged in (0: none; fusion costs a second pass)")
    p.add_argument("--band", default=",".join(map(str, DEFAULT_BAND)),
                   help="colorfulness ratio band the rule keeps (then the lowest CIEDE2000 wins)")
    p.add_argument("--all-photos", action="store_true", help="score cut-outs too, not only whole scenes")
    p.add_argument("--n", type=int, default=0, help="photos drawn (seeded) from the split; 0 means all")
    p.add_argument("--write", action="store_true", help="save the chosen decoding as the folder's decoding.json")
    p.add_argument("--hints", action="store_true",
                   help="tune instead how a hint-aware model agrees with color points (refine_hints, hint_decay, "
                        "hint_chroma_scale)")
    p.add_argument("--hint-scales", default=",".join(map(str, TUNE_HINT_SCALES)),
                   help="with --hints: comma-separated chroma scales tried when points are given")


def _run_tune(args: argparse.Namespace) -> int:
    from autocolor.tune import format_tune, format_tune_hints, tune, tune_hints

    if args.hints:
        scales = _numbers(args.hint_scales, float, "--hint-scales")
        print(format_tune_hints(tune_hints(args.model, args.data, split=args.split, n=args.n or 24, write=args.write,
                                           scales=scales)))
        return 0

    band = _numbers(args.band, float, "--band")
    if len(band) != 2 or not 0 <= band[0] <= band[1]:
        raise SystemExit(f"error: --band {args.band!r} must be two increasing numbers, e.g. 0.8,1.2")
    report = tune(args.model, args.data, split=args.split, temperatures=_numbers(args.temperatures, float,
                  "--temperatures"), scales=_numbers(args.scales, float, "--scales"), band=(band[0], band[1]),
                  scenes_only=not args.all_photos, n=args.n or None, write=args.write,
                  powers=_numbers(args.confidence_powers, float, "--confidence-powers"),
                  fusions=_numbers(args.fusion_sizes, int, "--fusion-sizes"))
    print(format_tune(report))
    return 0


def _run_evaluate_photos(args: argparse.Namespace) -> int:
    import json

    from autocolor.atomic import atomic_write_bytes
    from autocolor.data import parse_spec
    from autocolor.evaluate_photos import evaluate_photos, format_photos_markdown

    kind, root = parse_spec(args.data)
    if kind != "folder":
        raise SystemExit(f"error: --whole-photos needs a photo corpus, folder:DIR; got {args.data!r}")
    report = evaluate_photos([m for m in args.models.split(",") if m.strip()], root, split=args.split,
                             faces=(False, True), limit=args.n or None, grid_dir=args.out)
    text = format_photos_markdown(report)
    print(text, end="")
    if args.out is not None:
        atomic_write_bytes(args.out / "photos.md", text.encode())
        atomic_write_bytes(args.out / "photos.json", json.dumps(report, indent=1).encode())
        print(f"wrote {args.out / 'photos.md'}, photos.json, faces.jpg and scenes.jpg")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from autocolor.evaluate import EvaluationError, evaluate, format_markdown

    if args.hint_points and args.whole_photos:
        raise SystemExit("error: choose one of --hint-points and --whole-photos")
    if args.hint_points:
        return _run_evaluate_hints(args)
    if args.whole_photos:
        return _run_evaluate_photos(args)
    numbers = _numbers
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


def _bounded(bounds):
    """An argparse ``type`` refusing values outside ``bounds`` (NaN and inf included) in one line."""
    from autocolor.settings import check_number, describe

    def parse(text: str):
        try:
            value = int(text) if bounds.integer else float(text)
            return check_number("value", value, bounds)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {describe(bounds)}, got {text!r}") from None

    return parse


def _add_colorize(sub: argparse._SubParsersAction) -> None:
    from autocolor import settings as s

    p = sub.add_parser("colorize", help="colorize photos and videos: files, folders (recursively), globs, or - for stdin",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns; - reads stdin")
    p.add_argument("-o", "--out", required=True,
                   help="output folder (folder layout is kept); for one input, a file name such as out.jpg, "
                        "or - for stdout")
    p.add_argument("--model", default="default",
                   help="model folder (model.safetensors + config.json), 'default', or 'levin' (hints only)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="inference engine (onnxruntime: pip install 'autocolor[onnx]')")
    p.add_argument("--device", default="auto", help="torch backend: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--render-size", type=_bounded(s.RENDER_SIZE), default=None,
                   help=f"working resolution in pixels per side, {s.RENDER_SIZE.low}-{s.RENDER_SIZE.high} (chroma "
                        f"models: {s.DEFAULT_RENDER_SIZE}; RGB models: full size)")
    p.add_argument("--saturation", type=_bounded(s.SATURATION), default=1.0,
                   help=f"chroma scale, {s.SATURATION.low:g}-{s.SATURATION.high:g}; 1 = as predicted")
    p.add_argument("--format", choices=list(s.OUTPUT_FORMATS), default=None,
                   help="output format (default: the output name's, else the input's own; GIF becomes PNG)")
    p.add_argument("--quality", type=_bounded(s.QUALITY), default=92, help="JPEG/WebP quality, 1-100")
    p.add_argument("--crf", type=_bounded(s.CRF), default=s.DEFAULT_CRF,
                   help="video: x264 quality factor, lower is finer (18 keeps chroma crisp; 23 blurs it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist (default: skip those this input gave, report others)")
    p.add_argument("--keep-color", action="store_true", help="copy color inputs as they are instead of recolorizing")
    p.add_argument("--no-faces", action="store_true",
                   help="no skin-tone corrections on detected faces (they need the faces extra: opencv-python-headless<5)")
    p.add_argument("--strip-metadata", action="store_true",
                   help="write no metadata (default: EXIF, ICC profile, dpi, XMP and IPTC are copied from each input)")
    p.add_argument("--max-pixels", type=_bounded(s.MAX_PIXELS), default=s.DEFAULT_MAX_PIXELS,
                   help="refuse larger images (decompression bombs)")
    p.add_argument("--batch-size", type=_bounded(s.BATCH_SIZE), default=8,
                   help=f"images of one size colorized together, 1-{s.BATCH_SIZE.high}")
    p.add_argument("--workers", type=_bounded(s.WORKERS), default=2,
                   help="threads decoding and encoding beside the model")
    p.add_argument("--threads", type=_bounded(s.THREADS), default=0,
                   help="PyTorch intra-op threads; 0: all cores (fastest on an idle machine; 1 is faster when "
                        "other work shares a small CPU)")
    p.add_argument("--hints", metavar="JSON", type=Path,
                   help='color points: {"points": [{"x": 120, "y": 40, "color": "#6d9ed8"}, ...]} '
                        "(x column, y row, in the photo's pixels)")
    p.add_argument("--scribbles", metavar="IMAGE", type=Path,
                   help="RGBA image of the photo's size: opaque pixels give colors to spread")
    p.add_argument("--reference", metavar="IMAGE", type=Path,
                   help="a color photo whose colors to use; one for a whole folder is fine")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary to stdout: one record per file (input, output, status, reason, seconds)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")


def _say(text: str) -> None:
    from autocolor.errors import printable

    print(printable(text), file=sys.stderr)


def _single_target(args: argparse.Namespace) -> str | None:
    """``-o`` as one output file (or ``-``), or None for an output folder."""
    from autocolor.settings import INPUT_EXTENSIONS

    out = args.out
    single = out == "-" or (Path(out).suffix.lower() in INPUT_EXTENSIONS and not Path(out).is_dir())
    if not single and "-" not in args.paths:
        return None
    if "-" in args.paths and not single:
        raise SystemExit("error: reading stdin (-) needs one output file: -o out.png, or -o - for stdout")
    if len(args.paths) != 1 or (args.paths[0] != "-" and not Path(args.paths[0]).is_file()):
        raise SystemExit(f"error: -o {out} names one output file; give one input file, or an output folder")
    return out


def _sniff_format(data: bytes) -> str:
    """The output format for bytes read from stdin: their own (PNG for GIF and the unknown)."""
    for magic, fmt in ((b"\xff\xd8\xff", "jpg"), (b"RIFF", "webp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
                       (b"BM", "bmp")):
        if data.startswith(magic):
            return fmt
    return "png"


def _run_colorize(args: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="autocolor-") as scratch:
        try:
            return _colorize(args, Path(scratch))
        except KeyboardInterrupt:
            _say("interrupted before colorizing began; nothing was written")
            return 130


def _colorize(args: argparse.Namespace, scratch: Path) -> int:
    """Colorize what the arguments name (stdin read into ``scratch``); the exit code."""
    single = _single_target(args)
    if single == "-" and args.json:
        raise SystemExit("error: --json prints to stdout, which -o - already uses; write the image to a file")
    jobs, problems, out = _plan_colorize(args, single, scratch)
    for path, reason in problems:
        _say(f"{path}: {reason}")
    if not jobs:
        _say("error: nothing to colorize" + ("" if problems else " (no image files among the inputs)"))
        return 1
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _say(f"error: {out}: cannot create the output folder ({exc.strerror or exc})")
        return 2
    if args.backend == "onnxruntime":  # photos in the automatic mode need no PyTorch
        needs_torch = _onnxruntime_needs_torch(args, jobs)
        if needs_torch is None:
            return _colorize_onnxruntime(args, jobs, problems, single)
        _say(f"note: {needs_torch}; --backend onnxruntime runs only the network here")
    import torch

    from autocolor.distributed import init_distributed, shard
    from autocolor.guide import HintError
    from autocolor.inference import Colorizer, colorize_files

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    hints = _read_hints(args)
    # Under torchrun each rank takes every world-th file (each done exactly once)
    # on its own GPU; a lone process is a world of one.
    device_name = "cpu" if args.backend == "onnxruntime" and args.device == "auto" else args.device
    info, device = init_distributed(device_name)
    jobs = shard(jobs, info)
    problems = problems if info.main else []
    colorizer = Colorizer.load(args.model, device=str(device), backend=args.backend)
    colorizer.faces = not args.no_faces
    if hints is not None and not colorizer.model.guided:
        raise HintError(f"--model {args.model} takes no color hints; use --model levin or a hint-aware model folder")
    summary = colorize_files(
        colorizer, jobs, render_size=args.render_size, saturation=args.saturation, keep_color=args.keep_color,
        overwrite=args.overwrite or single == "-", max_pixels=args.max_pixels, quality=args.quality,
        batch_size=args.batch_size, workers=args.workers, hints=hints, strip_metadata=args.strip_metadata,
        progress=not args.no_progress and info.main and sys.stderr.isatty(), log=_say, crf=args.crf,
    )
    return _report_colorize(args, summary, problems, jobs, single, info)


def _plan_colorize(args: argparse.Namespace, single: str | None, scratch: Path) -> tuple[list, list, Path]:
    """The jobs (stdin saved into ``scratch`` first), the inputs that could not be planned, and the output folder."""
    from autocolor.inference import Job, plan_jobs

    paths = list(args.paths)
    stdin_format = None
    if paths == ["-"]:
        data = sys.stdin.buffer.read()
        stdin_format = _sniff_format(data)
        (scratch / "stdin").write_bytes(data)
        paths = [str(scratch / "stdin")]
    if single is None:
        out = Path(args.out)
        jobs, problems = plan_jobs(paths, out, args.format)
        return jobs, problems, out
    source = Path(paths[0])
    target, fmt = _single_output(args, single, source, scratch, stdin_format)
    return [Job(source, target, fmt)], [], target.parent


def _single_output(args: argparse.Namespace, single: str, source: Path, scratch: Path,
                   stdin_format: str | None) -> tuple[Path, str]:
    """The one output file and its format: a scratch file for stdout, or the file ``-o`` names (checked)."""
    from autocolor.settings import OUTPUT_FORMATS, SUFFIX_FORMATS

    if single == "-":
        fmt = args.format or (stdin_format if args.paths == ["-"] else _output_format(source))
        target = scratch / f"stdout.{fmt}"
    else:
        target = Path(single)
        named = SUFFIX_FORMATS.get(target.suffix.lower())
        if named is None:
            raise SystemExit(f"error: -o {target}: cannot write {target.suffix} files; name the output "
                             f".png, .jpg, .webp, .tif or .bmp")
        if args.format is not None and args.format != named:
            raise SystemExit(f"error: -o {target} names a {named} file but --format is {args.format}; "
                             "drop one of them")
        fmt = named
        if target.exists() and target.resolve() == source.resolve():
            raise SystemExit(f"error: -o {target} is the input itself; inputs are never overwritten")
    assert fmt in OUTPUT_FORMATS
    return target, fmt


def _read_hints(args: argparse.Namespace):
    """The color hints that --hints, --scribbles and --reference give (None without any); a bad one is
    one line naming its flag and file."""
    if not (args.hints or args.scribbles or args.reference):
        return None
    from autocolor.guide import HintError, Hints, load_points
    from autocolor.imageio import ImageError

    points = load_points(args.hints) if args.hints else []
    try:
        Hints.build(points)
    except HintError as exc:
        raise HintError(f"{args.hints}: {exc}") from None
    scribble = _image_arg(args.scribbles, "--scribbles", ImageError)
    reference = _image_arg(args.reference, "--reference", ImageError)
    try:
        return Hints.build(points, scribble, reference)
    except HintError as exc:
        flag, path = ("--scribbles", args.scribbles) if "scribble" in str(exc) else ("--reference", args.reference)
        raise HintError(f"{flag} {path}: {exc}") from None


def _report_colorize(args: argparse.Namespace, summary, problems: list, jobs: list, single: str | None, info) -> int:
    """Say the summary (with the inputs that could not be planned), print the image or JSON asked for; the exit code."""
    from autocolor.inference import FileResult

    summary.failed[:0] = problems
    summary.files[:0] = [FileResult(str(path), None, "failed", reason) for path, reason in problems]
    if single == "-":
        if summary.done:
            sys.stdout.buffer.write(jobs[0].target.read_bytes())
            sys.stdout.buffer.flush()
        for record in summary.files:
            record.input = "-" if args.paths == ["-"] else record.input
            record.output = "-"
    _say_summary(summary, info)
    if args.json:
        import dataclasses

        print(json.dumps({"done": summary.done, "skipped": summary.skipped, "failed": len(summary.failed),
                          "interrupted": summary.interrupted, "seconds": round(summary.seconds, 3),
                          "files": [dataclasses.asdict(f) for f in summary.files]}, indent=1))
    if summary.interrupted:
        _say("interrupted: the outputs written are whole; run the same command again to do the rest")
        return 130
    return 1 if summary.failed else 0


def _say_summary(summary, info) -> None:
    """The summary line; under torchrun, each rank's and (on rank 0) the sum over ranks
    (``info`` None: one process that never started torch)."""
    if info is not None and info.world > 1:
        from autocolor.distributed import all_sum

        _say(f"rank {info.rank}: {summary.line()}")
        done, skipped, failed = all_sum([summary.done, summary.skipped, len(summary.failed)], info)
        if info.main:
            _say(f"all {info.world} ranks: done {done:.0f}, skipped {skipped:.0f} (already written), "
                 f"failed {failed:.0f}")
    else:
        _say(summary.line())


def _onnxruntime_needs_torch(args: argparse.Namespace, jobs: list) -> str | None:
    """Why a ``colorize --backend onnxruntime`` command needs PyTorch beside
    onnxruntime, judged from its arguments and planned jobs (None: it does not)."""
    import os

    if args.hints or args.scribbles or args.reference:
        return "color hints are laid out with PyTorch"
    if str(args.model) == "levin":
        return "--model levin is an optimization run with PyTorch and SciPy, not an exported network"
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        return "torchrun shares the work out through PyTorch"
    if any(job.fmt == "video" for job in jobs):
        return "videos are colorized with PyTorch (the network runs on onnxruntime)"
    return None


def _colorize_onnxruntime(args: argparse.Namespace, jobs: list, problems: list, single: str | None) -> int:
    """``colorize --backend onnxruntime`` without PyTorch (:mod:`autocolor.ort_runner`); the exit code."""
    from autocolor.errors import SetupError
    from autocolor.inference import colorize_files
    from autocolor.ort_runner import OrtColorizer

    if str(args.device) not in ("cpu", "auto"):
        raise SetupError(f"the onnxruntime backend runs on the CPU; use --device cpu, or --backend torch "
                         f"for {args.device}")
    colorizer = OrtColorizer.load(args.model, threads=args.threads or None)
    colorizer.faces = not args.no_faces
    summary = colorize_files(
        colorizer, jobs, render_size=args.render_size, saturation=args.saturation, keep_color=args.keep_color,
        overwrite=args.overwrite or single == "-", max_pixels=args.max_pixels, quality=args.quality,
        batch_size=args.batch_size, workers=args.workers, strip_metadata=args.strip_metadata,
        progress=not args.no_progress and sys.stderr.isatty(), log=_say,
    )
    return _report_colorize(args, summary, problems, jobs, single, None)


def _output_format(source: Path) -> str:
    from autocolor.imageio import output_format_for

    return output_format_for(source)


def _image_arg(path: Path | None, flag: str, image_error: type[Exception]):
    """An image named on the command line, read now so a bad one is one line naming it."""
    if path is None:
        return None
    from autocolor.imageio import read_image

    try:
        image = read_image(path)[0]
    except image_error as exc:
        raise image_error(f"{flag} {path}: {exc}") from None
    if flag == "--scribbles" and image.mode not in ("LA", "RGBA"):
        raise image_error(f"{flag} {path}: has no alpha channel to mark the painted pixels; paint the colors "
                          "on a transparent layer and save it as RGBA PNG")
    return image


def _add_export(sub: argparse._SubParsersAction) -> None:
    from autocolor.settings import (
        DEFAULT_RENDER_SIZE,  # torch-free: building the parser stays fast
    )

    p = sub.add_parser("export", help="export a chroma model's network to ONNX",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--onnx", required=True, type=Path, help="ONNX file to write")
    p.add_argument("--model", default="default", help="model folder (model.safetensors + config.json) or 'default'")
    p.add_argument("--render-size", type=int, default=DEFAULT_RENDER_SIZE,
                   help="side of the example input traced (height and width stay dynamic)")


def _run_export(args: argparse.Namespace) -> int:
    import onnx  # noqa: F401 - torch's exporter needs it; when missing, main() names the extra

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
    p.add_argument("-o", "--out", type=Path, default=Path("outputs"), help="output folder")
    p.add_argument("--model", default="default", help="model folder or 'default'")


def _run_demo(args: argparse.Namespace) -> int:
    from autocolor.demo import run_demo

    run_demo(args.out, args.model)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), escaped for the terminal."""

    def error(self, message: str):
        from autocolor.errors import printable

        self.exit(2, printable(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; imports no torch (``autocolor --help`` is instant)."""
    from autocolor import __version__

    parser = _Parser(prog="autocolor", description="Colorize grayscale photos; train and compare models.")
    parser.add_argument("--version", action="version", version=f"autocolor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_data(sub)
    sub.add_parser("models", help="list registered models with their parameter counts")
    _add_serve(sub)
    _add_evaluate(sub)
    _add_tune(sub)
    _add_colorize(sub)
    _add_export(sub)
    _add_demo(sub)
    return parser


COMMANDS = {"train": _run_train, "data": _run_data, "models": _run_models, "serve": _run_serve, "evaluate": _run_evaluate,
            "tune": _run_tune, "colorize": _run_colorize, "export": _run_export, "demo": _run_demo}


# Modules that come with an extra, not with the core install: a command that needs
# one and does not find it says which extra to install instead of a traceback.
_EXTRA_OF_MODULE = {"tensorboard": "train", "torchvision": "train", "torchmetrics": "train", "matplotlib": "eval",
                    "gradio": "web", "fastapi": "web", "uvicorn": "web", "onnx": "onnx", "onnxruntime": "onnx",
                    "av": "video", "cv2": "faces"}


def _missing_extra(exc: ModuleNotFoundError, command: str) -> str | None:
    """The one-line fix for a module of an extra that is not installed (None: not one of those)."""
    module = (exc.name or "").partition(".")[0]
    extra = _EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    if extra == "train" and command == "evaluate" and module != "tensorboard":
        extra = "eval"
    return f"autocolor {command} needs {module}, which comes with an extra: pip install 'autocolor[{extra}]'"


def main(argv: list[str] | None = None) -> int:
    from autocolor.errors import EXIT_USER_ERROR, AutocolorError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except AutocolorError as exc:
        from autocolor.errors import printable

        print(printable(f"error: {exc}"), file=sys.stderr)
        return EXIT_USER_ERROR
    except ModuleNotFoundError as exc:
        fix = _missing_extra(exc, args.command)
        if fix is None:
            raise
        print(f"error: {fix}", file=sys.stderr)
        return EXIT_USER_ERROR
    except SystemExit as exc:
        if isinstance(exc.code, str):  # raise SystemExit("error: ..."): a usage error, exit status 2 (not Python's 1)
            from autocolor.errors import printable

            print(printable(exc.code), file=sys.stderr)
            exc.code = EXIT_USER_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
