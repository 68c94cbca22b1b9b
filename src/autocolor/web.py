"""The web demo: colorize photos in the browser with the same Colorizer as the CLI.

``autocolor serve`` starts a Gradio app on loopback. A visitor uploads one or
several photos (or picks a bundled sample), sees a before/after slider for
each and downloads the colorized photos at full resolution.

What protects the machine it runs on:

* uploads are capped in bytes (Gradio's ``max_file_size``) and in pixels
  (:func:`autocolor.imageio.load_image`, which also refuses decompression
  bombs), and a bad file gets a one-line message in the page, never a traceback;
* requests wait in a bounded queue and at most ``concurrency`` run at once, so
  a crowd of visitors queues instead of exhausting memory;
* every file the app touches lives in one temporary folder of its own:
  Gradio's uploads and cache are pointed there, a visitor's files are deleted
  when the tab closes, older ones on a timer, and the folder itself on exit;
* no path outside that folder is served (``allowed_paths`` is empty).
"""

# No ``from __future__ import annotations`` here: Gradio finds the ``gr.Request``
# parameter of a handler by its annotation, which must be a real class, and
# gradio itself is imported only once ``serve`` has pointed its folders into
# the app's own (some of its modules read them at import time).
import os
import shutil
import signal
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from autocolor.checkpoint import WEIGHTS_NAME
from autocolor.imageio import ImageError, load_image, pil_to_array, split_pixels, to_uint8
from autocolor.inference import Colorizer, default_model_dir

if TYPE_CHECKING:
    import gradio as gr

RENDER_SIZES = (128, 192, 256, 384, 512, 768, 1024)
DEFAULT_RENDER_SIZE = 256
PREVIEW_SIDE = 1280  # the sliders show previews; downloads keep the full resolution
SAMPLE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
NO_SAMPLE = "(none)"
MAX_PIXELS = 40_000_000  # per image: a 40 MP photo needs a few GB while colorized, and the demo is shared


def find_samples() -> list[Path]:
    """Sample photos bundled with the package or found in the checkout's ``samples/``.

    Returns an empty list when neither exists: the demo works without them.
    """
    package = Path(__file__).resolve().parent
    for folder in (package / "samples", package.parents[1] / "samples"):
        if folder.is_dir():
            found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)
            if found:
                return found
    return []


def default_model_available() -> bool:
    return (default_model_dir() / WEIGHTS_NAME).is_file()


def model_choices(paths: list[str]) -> dict[str, str]:
    """Page labels for model folders (their folder names); the default weights
    when no folder is given and they are installed. Empty when there is nothing to offer."""
    if not paths:
        return {"default": "default"} if default_model_available() else {}
    choices: dict[str, str] = {}
    for path in paths:
        folder = Path(path).parent if Path(path).suffix == ".safetensors" else Path(path)
        label = folder.resolve().name or str(folder)
        while label in choices:
            label = f"{label}'"
        choices[label] = str(path)
    return choices


@dataclass
class WebConfig:
    """Settings of one running demo."""

    models: dict[str, str]  # label shown in the page -> model folder, or "default"
    device: str = "cpu"
    max_pixels: int = MAX_PIXELS  # per image
    max_file_size: str = "25mb"  # per upload, enforced by Gradio before anything is decoded
    max_images: int = 8  # per request; one slider each
    concurrency: int = 1  # requests colorized at once
    queue_size: int = 20  # requests waiting beyond those; more are turned away
    cleanup_every_s: int = 600  # how often Gradio sweeps its cache ...
    keep_files_s: int = 1800  # ... for files older than this (closed tabs are cleaned at once)
    samples: list[Path] = field(default_factory=find_samples)

    def __post_init__(self) -> None:
        assert self.models, "the demo needs at least one model"
        assert self.concurrency >= 1 and self.queue_size >= 1 and self.max_images >= 1


class ModelCache:
    """Loads each offered model on first use and shares it between requests."""

    def __init__(self, sources: dict[str, str], device: str = "cpu") -> None:
        self._sources = sources
        self._device = device
        self._loaded: dict[str, Colorizer] = {}
        self._lock = threading.Lock()

    def get(self, label: str) -> Colorizer:
        if label not in self._sources:
            raise KeyError(f"unknown model {label!r}")
        with self._lock:
            if label not in self._loaded:
                self._loaded[label] = Colorizer.load(self._sources[label], device=self._device)
            return self._loaded[label]


@dataclass
class Outcome:
    """What became of one uploaded file: previews and the full result, or why not."""

    name: str
    before: Path | None = None  # gray preview
    after: Path | None = None  # colorized preview
    result: Path | None = None  # colorized PNG at the input's resolution
    error: str | None = None


def gray_preview(image: Image.Image) -> Image.Image:
    """The gray the model sees, as an 8-bit "L" image (of any input mode, 16-bit included)."""
    return Image.fromarray(to_uint8(split_pixels(pil_to_array(image)).gray), "L")


def _preview(image: Image.Image, path: Path) -> Path:
    small = image if image.mode in ("L", "RGB") else image.convert("RGB")  # JPEG has no alpha
    small = small.copy()
    small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    small.save(path, quality=90)
    return path


def colorize_files(
    colorizer: Colorizer,
    files: list[tuple[str, Path]],
    out_dir: Path,
    render_size: int | None = None,
    saturation: float = 1.0,
    max_pixels: int = MAX_PIXELS,
) -> list[Outcome]:
    """Colorize ``(display name, path)`` pairs into ``out_dir``; a file that
    cannot be read becomes an :class:`Outcome` with a one-line ``error``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for index, (name, path) in enumerate(files):
        stem = Path(name).stem or "image"
        try:
            image = load_image(path, max_pixels=max_pixels)
        except ImageError as exc:
            outcomes.append(Outcome(name, error=f"{name}: {exc}"))
            continue
        try:
            colored = colorizer.colorize(image, render_size=render_size, saturation=saturation)
        except MemoryError:
            outcomes.append(Outcome(name, error=f"{name}: too large to colorize with the memory available"))
            continue
        folder = out_dir / f"{index:02d}"  # one per file: two uploads may share a name
        folder.mkdir()
        result = folder / f"{stem}-color.png"
        colored.save(result)
        outcomes.append(Outcome(
            name,
            before=_preview(gray_preview(image), folder / f"{stem}-before.jpg"),
            after=_preview(colored, folder / f"{stem}-after.jpg"),
            result=result,
        ))
    return outcomes


def _status_text(outcomes: list[Outcome], notes: list[str]) -> str:
    done = sum(o.result is not None for o in outcomes)
    lines = [f"Colorized {done} of {len(outcomes)} image{'s' if len(outcomes) != 1 else ''}."] if outcomes else []
    lines += [f"- {o.error}" for o in outcomes if o.error] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def build_app(config: WebConfig, workdir: Path) -> "gr.Blocks":
    """The demo's page, its event handlers and its bounded queue.

    ``workdir`` must be Gradio's upload folder (``GRADIO_TEMP_DIR``, see :func:`serve`):
    results written there are served in place, not copied into Gradio's cache,
    so deleting a session's files when its tab closes leaves nothing behind.
    """
    import gradio as gr
    from gradio.utils import get_upload_folder

    assert Path(get_upload_folder()).resolve() == workdir.resolve(), "workdir must be GRADIO_TEMP_DIR"

    models = ModelCache(config.models, config.device)
    samples = {p.name: p for p in config.samples}
    session_files: dict[str, list[Path]] = {}  # session -> files to delete when its tab closes
    session_lock = threading.Lock()

    def remember(session: str, paths: list[Path]) -> None:
        with session_lock:
            session_files.setdefault(session, []).extend(paths)

    def forget_session(request: gr.Request) -> None:
        with session_lock:
            paths = session_files.pop(request.session_hash or "", [])
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def run(uploads, sample, model_label, render_size, saturation, request: gr.Request):
        session = request.session_hash or "anonymous"
        files = [(Path(p).name, Path(p)) for p in (uploads or [])]
        remember(session, [p for _, p in files])
        if sample and sample != NO_SAMPLE and sample in samples:
            files.append((sample, samples[sample]))
        notes = []
        if not files:
            notes.append("Upload a photo or pick a sample first.")
        if len(files) > config.max_images:
            notes.append(f"Only the first {config.max_images} images were colorized (the limit per request).")
            files = files[: config.max_images]
        outcomes: list[Outcome] = []
        if files:
            try:
                colorizer = models.get(model_label)
            except Exception as exc:  # a broken model folder: say which and why, keep serving
                notes.append(f"Model {model_label!r} could not be loaded: {str(exc).splitlines()[0]}")
            else:
                out_dir = workdir / "results" / uuid.uuid4().hex  # never a client-chosen name
                remember(session, [out_dir])
                outcomes = colorize_files(
                    colorizer, files, out_dir, int(render_size), float(saturation), config.max_pixels
                )
        status = _status_text(outcomes, notes)
        for message in [o.error for o in outcomes if o.error] + notes:
            gr.Warning(message)
        done = [o for o in outcomes if o.result is not None]
        sliders = [
            gr.ImageSlider(value=(str(o.before), str(o.after)), label=o.name, visible=True) for o in done
        ] + [gr.ImageSlider(value=None, visible=False)] * (config.max_images - len(done))
        return [status, [str(o.result) for o in done] or None, *sliders]

    labels = list(config.models)
    with gr.Blocks(title="autocolor", analytics_enabled=False,
                   delete_cache=(config.cleanup_every_s, config.keep_files_s)) as demo:
        gr.Markdown("# autocolor\nColorize black-and-white photos. Drag the slider to compare before and after.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                uploads = gr.File(label="Photos", file_count="multiple", file_types=["image"], elem_id="uploads")
                sample = gr.Dropdown([NO_SAMPLE, *samples], value=NO_SAMPLE, label="…or a sample photo",
                                     visible=bool(samples), elem_id="sample")
                model = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="model")
                render_size = gr.Dropdown(list(RENDER_SIZES), value=DEFAULT_RENDER_SIZE, elem_id="render-size",
                                          label="Render size (the model sees about this many pixels squared)")
                saturation = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Saturation", elem_id="saturation")
                button = gr.Button("Colorize", variant="primary", elem_id="colorize")
                status = gr.Markdown(elem_id="status")
                downloads = gr.File(label="Full-resolution results", file_count="multiple",
                                    interactive=False, elem_id="downloads")
            with gr.Column(scale=2):
                sliders = [
                    gr.ImageSlider(visible=False, interactive=False, format="jpeg", buttons=["fullscreen"],
                                   max_height=720, elem_id=f"slider-{i}", elem_classes=["result-slider"])
                    for i in range(config.max_images)
                ]
        button.click(
            run, [uploads, sample, model, render_size, saturation], [status, downloads, *sliders],
            api_name="colorize", concurrency_limit=config.concurrency,
        )
        demo.unload(forget_session)
    return demo.queue(default_concurrency_limit=config.concurrency, max_size=config.queue_size)


def serve(config: WebConfig, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Run the demo until interrupted (Ctrl-C or SIGTERM), then delete every file it kept."""
    workdir = Path(tempfile.mkdtemp(prefix="autocolor-web-"))
    # Gradio reads these when components are built and files are served: everything it
    # stores, and everything it may serve, stays inside the app's own folder.
    os.environ["GRADIO_TEMP_DIR"] = str(workdir)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workdir / "examples")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        demo = build_app(config, workdir)
        print(f"autocolor web demo on http://{host}:{port} (temporary files in {workdir})", flush=True)
        demo.launch(
            server_name=host, server_port=port, max_file_size=config.max_file_size,
            allowed_paths=[], show_error=False, ssr_mode=False, quiet=True, footer_links=[],
        )
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workdir, ignore_errors=True)
