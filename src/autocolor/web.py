"""The web demo: colorize photos in the browser with the same Colorizer as the CLI.

``autocolor serve`` starts a Gradio app on loopback. A visitor uploads photos
(or clicks a sample), sees the result and a before/after slider for each, and
guides the colors: a click on the photo drops a color point (with a color
picker, swatches of the model's likeliest colors there, undo and clear), a
reference photo lends its palette. Each edit re-renders from cached chroma
where it can (:mod:`autocolor.webedit`); downloads are full resolution, in the
input's format, one by one or all in a zip.

What protects the machine and its visitors (:mod:`autocolor.webguard`):

* uploads are capped in bytes (per file), in files per request, and in files
  and bytes per visitor and time window; each is stored in a random folder of
  its own, so identical uploads of two visitors are two files, and a closing
  tab deletes only its own; unclaimed uploads expire after minutes;
* images are capped in pixels and in aspect (a strip of 1 x 40 M pixels is a
  few kB), a request in total pixels, and the model works one image at a time
  per slot, the visitor who used least compute recently first;
* a bad file gets a one-line message in the page, never a traceback; names
  are escaped in every message;
* requests wait in a bounded queue; every file lives in the server's own
  temporary folder, deleted on exit, and by the next start if the server was
  killed; no path outside it is served (``allowed_paths`` is empty).
"""

# No ``from __future__ import annotations`` here: Gradio finds the ``gr.Request``
# parameter of a handler by its annotation, which must be a real class, and
# gradio itself is imported only once ``serve`` has pointed its folders into
# the app's own (some of its modules read them at import time).
import os
import shutil
import signal
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from autocolor.checkpoint import WEIGHTS_NAME
from autocolor.imageio import ImageError
from autocolor.inference import Colorizer, default_model_dir
from autocolor.webedit import (
    ChromaCache,
    Edit,
    Photo,
    chroma_for,
    display_name,
    gray_image,
    header_size,
    limit_message,
    open_photo,
    points_html,
    preview_image,
    save_full,
    scribble_from_layer,
)
from autocolor.webguard import (
    FairGate,
    UploadQuota,
    UploadStore,
    VisitorLimit,
    make_workdir,
    remove_leftovers,
)

if TYPE_CHECKING:
    import gradio as gr

RENDER_SIZES = (128, 192, 256, 384, 512, 768, 1024)
COMPARED_SIZES = (128, 256, 512)  # the strip comparing render sizes
DEFAULT_RENDER_SIZE = 256
SAMPLE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
MAX_PIXELS = 40_000_000  # per image: a 40 MP photo needs a few GB while colorized, and the demo is shared
SWATCHES = 5  # suggested colors shown at the last click
DEFAULT_POINT_COLOR = "#3a7bd5"


def find_samples() -> list[Path]:
    """The sample photos bundled with the package (``autocolor/samples/``).

    Returns an empty list when there are none: the demo works without them.
    """
    from autocolor.demo import samples_dir

    folder = samples_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)


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

    models: dict[str, str]  # label shown in the page -> model folder, "default" or "levin"
    device: str = "cpu"
    max_pixels: int = MAX_PIXELS  # per image
    max_request_pixels: int = 60_000_000  # per request, all its images together
    max_file_size: str = "25mb"  # per upload, enforced by Gradio before anything is decoded
    max_images: int = 8  # per request (files per upload, too); one slider each
    max_video_seconds: float = 10.0  # the video tab takes short clips: a 10 s clip takes about as long to colorize
    max_video_pixels: int = 640 * 480  # per frame (640x360, 480x640 and the like)
    max_video_frames: int = 600  # 10 s at 60 frames/s, counted as decoded whatever the header says
    concurrency: int = 1  # images colorized at once (the fair gate's slots)
    workers: int = 4  # requests in progress at once; beyond the slots they wait their turn at the gate
    visitor_pixels_per_minute: int = 400_000_000  # what one visitor may have colorized per minute
    queue_size: int = 20  # requests waiting beyond those; more are turned away
    upload_files: int = 100  # per visitor (client address) and window ...
    upload_mb: int = 300  # ... and bytes
    upload_window_s: int = 600
    unclaimed_s: int = 300  # an upload no request used is deleted after this
    cleanup_every_s: int = 600  # how often Gradio sweeps its cache ...
    keep_files_s: int = 1800  # ... for files older than this (closed tabs are cleaned at once)
    samples: list[Path] = field(default_factory=find_samples)

    def __post_init__(self) -> None:
        assert self.models, "the demo needs at least one model"
        assert self.concurrency >= 1 and self.queue_size >= 1 and self.max_images >= 1 and self.workers >= 1
        assert self.max_request_pixels >= self.max_pixels >= 1


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


# ---------------------------------------------------------------- colorizing, without Gradio


@dataclass
class Outcome:
    """What became of one uploaded file: previews and the full result, or why not."""

    name: str
    before: Path | None = None  # gray preview
    after: Path | None = None  # colorized preview
    result: Path | None = None  # colorized, at the input's resolution and in its format
    error: str | None = None
    photo: Photo | None = None
    notes: list[str] = field(default_factory=list)  # worth telling: converted from color, first frame


@dataclass
class Render:
    """How one visitor asked for a result; the same for every photo of a request."""

    model_label: str
    render_size: int
    saturation: float
    visitor: str = "anonymous"


def gated_chroma(colorizer: Colorizer, photo: Photo, edit: Edit | None, how: Render,
                 cache: ChromaCache, gate: FairGate):
    """:func:`chroma_for`; when the cache misses, the model waits for this visitor's fair turn."""
    return chroma_for(colorizer.model, photo, how.render_size, edit, cache, how.model_label,
                      turn=lambda: gate.turn(how.visitor, photo.pixels.gray.size))


def colorize_files(
    colorizer: Colorizer,
    files: list[tuple[str, Path]],
    out_dir: Path,
    render_size: int | None = None,
    saturation: float = 1.0,
    max_pixels: int = MAX_PIXELS,
    max_request_pixels: int | None = None,
) -> list[Outcome]:
    """Colorize ``(display name, path)`` pairs into ``out_dir``; a file that
    cannot be read, or does not fit the limits, becomes an :class:`Outcome`
    with a one-line, visitor-facing ``error``."""
    photos = open_photos(files, max_pixels)
    how = Render("model", render_size or DEFAULT_RENDER_SIZE, saturation)
    return colorize_photos(colorizer, photos, {}, how, out_dir, ChromaCache(), FairGate(), max_request_pixels)


def open_photos(files: list[tuple[str, Path]], max_pixels: int,
                max_request_pixels: int | None = None) -> list[Photo | Outcome]:
    """Each file decoded, or the :class:`Outcome` saying why not; past
    ``max_request_pixels`` in all (judged from the headers) nothing more is decoded."""
    opened: list[Photo | Outcome] = []
    budget = max_request_pixels
    for name, path in files:
        size = header_size(path)
        if budget is not None and size is not None and size[0] * size[1] > budget:
            opened.append(Outcome(name, error=over_budget(name, max_request_pixels)))
            continue
        try:
            photo = open_photo(name, path, max_pixels)
        except ImageError as exc:
            opened.append(Outcome(name, error=str(exc)))
            continue
        opened.append(photo)
        if budget is not None:
            budget -= photo.pixels.gray.size
    return opened


def over_budget(name: str, max_request_pixels: int | None) -> str:
    return (f"{display_name(name)}: not colorized; this request already reached the "
            f"{(max_request_pixels or 0) / 1e6:g} MP the demo colorizes at once. Send it again on its own.")


def colorize_photos(colorizer: Colorizer, photos: list[Photo | Outcome], edits: dict[str, Edit], how: Render,
                    out_dir: Path, cache: ChromaCache, gate: FairGate,
                    max_request_pixels: int | None = None) -> list[Outcome]:
    """Render each photo under its edit into a folder of its own in ``out_dir``,
    up to ``max_request_pixels`` in all; the rest are refused with a message."""
    budget = max_request_pixels or sum(p.pixels.gray.size for p in photos if isinstance(p, Photo))
    outcomes = []
    for index, photo in enumerate(photos):
        if isinstance(photo, Outcome):
            outcomes.append(photo)
            continue
        if photo.pixels.gray.size > budget:
            outcomes.append(Outcome(photo.name, error=over_budget(photo.name, max_request_pixels)))
            continue
        budget -= photo.pixels.gray.size
        outcome = render_outcome(colorizer, photo, edits.get(photo.key), how, out_dir / f"{index:02d}", cache, gate)
        outcome.notes = photo.notes
        outcomes.append(outcome)
    return outcomes


def render_outcome(colorizer: Colorizer, photo: Photo, edit: Edit | None, how: Render, folder: Path,
                   cache: ChromaCache, gate: FairGate) -> Outcome:
    """Previews and the full-resolution file of one photo under ``edit``."""
    try:
        ab = gated_chroma(colorizer, photo, edit, how, cache, gate)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{Path(photo.name).stem or 'image'}"
        before, after = folder / f"{stem}-before.jpg", folder / f"{stem}-after.jpg"
        gray_image(photo).save(before, quality=90)
        preview_image(photo, ab, how.saturation).save(after, quality=90)
        result = save_full(photo, ab, how.saturation, folder)
    except MemoryError:
        return Outcome(photo.name, error=f"{display_name(photo.name)}: too large to colorize with the memory "
                                          "this demo has; please upload a smaller copy.")
    except (ValueError, ImageError) as exc:  # hints the model cannot take, an unwritable format
        return Outcome(photo.name, error=f"{display_name(photo.name)}: {str(exc).splitlines()[0]}")
    return Outcome(photo.name, before, after, result, photo=photo)


def zip_results(paths: list[Path], target: Path) -> Path:
    """All results in one zip (stored, not compressed: JPEG and PNG are already)."""
    names: set[str] = set()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for path in paths:
            name, n = path.name, 1
            while name in names:  # two uploads may share a name
                n += 1
                name = f"{path.stem}-{n}{path.suffix}"
            names.add(name)
            archive.write(path, name)
    return target


@dataclass
class ClipOutcome:
    """What became of one uploaded clip: the colorized file, or why not (one line for the visitor)."""

    name: str
    result: Path | None = None
    error: str | None = None
    frames: int = 0
    seconds: float = 0.0  # colorizing took


def video_refusal(name: str, info, config: WebConfig) -> str | None:
    """Why the demo does not take a clip of this :class:`autocolor.video.VideoInfo`, or None."""
    shown = display_name(name)
    if info.width * info.height > config.max_video_pixels:
        return (f"{shown}: {info.width}x{info.height} is larger than this demo colorizes "
                f"({config.max_video_pixels:,} pixels a frame, such as 640x480); "
                "the command line (autocolor colorize) takes any size.")
    if info.seconds > config.max_video_seconds or info.frames > config.max_video_frames:
        length = f"{info.seconds:.1f} s" if info.seconds else f"{info.frames} frames"
        return (f"{shown}: {length} is longer than this demo colorizes ({config.max_video_seconds:g} s); "
                "cut a short part, or use the command line (autocolor colorize).")
    return None


def colorize_clip(colorizer: Colorizer, name: str, path: Path, folder: Path, config: WebConfig, gate: FairGate,
                  visitor: str = "anonymous", saturation: float = 1.0) -> ClipOutcome:
    """Colorize one uploaded clip into ``folder`` through :meth:`Colorizer.colorize_video`,
    within the demo's limits and the visitor's fair share of the model."""
    from autocolor.video import VideoError, probe_video

    try:
        info = probe_video(path)
    except VideoError as exc:
        return ClipOutcome(name, error=_clip_error(name, exc, path))
    if refusal := video_refusal(name, info, config):
        return ClipOutcome(name, error=refusal)
    if getattr(colorizer.model, "predicts", None) != "ab":
        return ClipOutcome(name, error=f"{display_name(name)}: this model colorizes photos only; choose another.")
    target = folder / f"{Path(name).stem or 'video'}-color.mp4"
    frames = info.frames or round(config.max_video_seconds * 30)
    started = time.monotonic()
    try:
        with gate.turn(visitor, info.width * info.height * frames):
            written = colorizer.colorize_video(path, target, saturation=saturation, progress=False,
                                               max_frames=config.max_video_frames)
    except VisitorLimit as exc:
        return ClipOutcome(name, error=f"{display_name(name)}: not colorized; {exc}")
    except VideoError as exc:
        return ClipOutcome(name, error=_clip_error(name, exc, path, target))
    return ClipOutcome(name, result=target, frames=written, seconds=time.monotonic() - started)


def _clip_error(name: str, exc: Exception, *paths: Path) -> str:
    """A video error for the visitor: under the name they gave, never a server path."""
    reason = str(exc)
    for path in paths:
        reason = reason.removeprefix(f"{path}: ")
    return f"{display_name(name)}: {reason.splitlines()[0] if reason else 'cannot be colorized'}"


def clip_status(outcome: ClipOutcome) -> str:
    if outcome.error:
        return f"- {outcome.error}"
    rate = outcome.frames / outcome.seconds if outcome.seconds else 0.0
    return (f"Colorized {outcome.frames} frames of {display_name(outcome.name)} in {outcome.seconds:.1f} s "
            f"({rate:.1f} frames/s).")


def _problems(refused: list[Outcome], notes: list[str]) -> str:
    return "\n".join(f"- {m}" for m in [o.error for o in refused] + notes)


def status_text(outcomes: list[Outcome], notes: list[str]) -> str:
    done = sum(o.result is not None for o in outcomes)
    lines = [f"Colorized {done} of {len(outcomes)} image{'s' if len(outcomes) != 1 else ''}."] if outcomes else []
    lines += [f"- {o.error}" for o in outcomes if o.error]
    lines += [f"- {n}" for o in outcomes for n in o.notes] + [f"- {n}" for n in notes]
    return "\n".join(lines)


# ---------------------------------------------------------------- a visitor's state


@dataclass
class Session:
    """One open tab: its photos, their edits, and the folder of its results."""

    visitor: str  # client address: what quotas and fair shares count by
    folder: Path
    photos: list[Photo] = field(default_factory=list)
    edits: dict[str, Edit] = field(default_factory=dict)  # photo key -> edit
    current: int = 0
    sources: list[Path] = field(default_factory=list)  # the files the photos came from
    refused: list[Outcome] = field(default_factory=list)  # files that could not be used, and why
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # photo key -> its latest result
    touched: float = field(default_factory=time.monotonic)
    renders: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def photo(self) -> Photo | None:
        return self.photos[self.current] if 0 <= self.current < len(self.photos) else None

    def edit(self) -> Edit:
        photo = self.photo
        assert photo is not None
        return self.edits.setdefault(photo.key, Edit())

    def _fresh(self, kind: str) -> Path:
        """A new folder per render, so the browser never shows a stale file under a
        reused name; older ones go once no current result lives in them."""
        self.renders += 1
        folder = self.folder / kind / f"{self.renders:05d}"
        folder.mkdir(parents=True)
        in_use = {o.result.parent.parent for o in self.outcomes.values() if o.result is not None}
        for old in sorted((self.folder / kind).iterdir())[:-3]:  # the page may still load the last two
            if old not in in_use:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def next_preview(self) -> Path:
        return self._fresh("previews")

    def next_result(self) -> Path:
        return self._fresh("results")

    def next_video(self) -> Path:
        return self._fresh("videos")


class WebState:
    """Everything the running demo shares between requests."""

    def __init__(self, config: WebConfig, workdir: Path) -> None:
        self.config, self.workdir = config, workdir
        self.models = ModelCache(config.models, config.device)
        self.cache = ChromaCache()
        self.gate = FairGate(config.concurrency, max_pixels=config.visitor_pixels_per_minute)
        self.uploads = UploadStore(workdir / "uploads", config.unclaimed_s)
        self.quota = UploadQuota(config.upload_files, config.upload_mb * 2**20, config.upload_window_s)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def session(self, request: "gr.Request") -> Session:
        key = request.session_hash or uuid.uuid4().hex
        with self._lock:
            if key not in self._sessions:
                visitor = request.client.host if request.client else "unknown"
                self._sessions[key] = Session(visitor, self.workdir / "results" / uuid.uuid4().hex)
            session = self._sessions[key]
        session.touched = time.monotonic()
        return session

    def end(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        self.uploads.end(key)
        if session is not None:
            for photo in session.photos:
                self.cache.drop(photo.key)
            shutil.rmtree(session.folder, ignore_errors=True)

    def sweep(self) -> None:
        """Forget sessions idle past ``keep_files_s`` (API callers never close a tab) and stale uploads."""
        limit = time.monotonic() - self.config.keep_files_s
        with self._lock:
            idle = [k for k, s in self._sessions.items() if s.touched < limit]
        for key in idle:
            self.end(key)
        self.uploads.sweep()

    def claim(self, session_key: str, paths: list[Path]) -> list[Path]:
        """The uploads this server stored (any other path is refused), now owned by the session."""
        mine = [p for p in paths if self.uploads.owns(p) and p.is_file()]
        self.uploads.claim(session_key, mine)
        return mine


# ---------------------------------------------------------------- the page's handlers


class Handlers:
    """The page's event handlers over a :class:`WebState`. Each takes the page's
    values and returns the values (or Gradio updates) of the outputs that
    :func:`build_app` wires to it."""

    def __init__(self, state: WebState) -> None:
        self.state, self.config = state, state.config
        self.samples = list(self.config.samples)

    # -- helpers

    def _how(self, session: Session, model_label, render_size, saturation) -> Render:
        """The request's settings, checked: a JSON null, list or object is a ValueError like a bad number."""
        try:
            saturation, size = float(saturation), float(render_size)
        except (TypeError, ValueError):
            raise ValueError(f"saturation {saturation!r} and render size {render_size!r} must be numbers") from None
        if not 0.0 <= saturation <= 2.0:  # NaN fails this too
            raise ValueError(f"saturation {saturation!r} must be a number in 0-2")
        if size not in RENDER_SIZES:  # inf and NaN fail this too
            raise ValueError(f"render size {render_size!r} must be one of {', '.join(map(str, RENDER_SIZES))}")
        return Render(str(model_label), int(size), saturation, session.visitor)

    def _load(self, session: Session, key: str, files: list[tuple[str, Path]]) -> None:
        """Decode the files into the session, unless they are the ones it holds."""
        sources = [path for _, path in files]
        if sources == session.sources:
            return
        opened = open_photos(files, self.config.max_pixels, self.config.max_request_pixels)
        for photo in session.photos:
            self.state.cache.drop(photo.key)
        session.sources = sources
        session.photos = [p for p in opened if isinstance(p, Photo)]
        session.refused = [o for o in opened if isinstance(o, Outcome)]
        session.outcomes, session.current, session.edits = {}, 0, {}

    def _editor(self, session: Session, how: Render):
        """The current photo's preview with its points: (image path, points HTML)."""
        photo = session.photo
        if photo is None:
            return None, points_html([])
        edit = session.edit()
        ab = gated_chroma(self.state.models.get(how.model_label), photo, edit, how, self.state.cache, self.state.gate)
        path = session.next_preview() / f"{Path(photo.name).stem or 'image'}-edit.jpg"
        preview_image(photo, ab, how.saturation, edit).save(path, quality=90)
        return str(path), points_html(edit.points)

    def _results(self, session: Session):
        """(downloads, slider updates) of the session's latest outcomes."""
        import gradio as gr

        done = [session.outcomes[p.key] for p in session.photos if p.key in session.outcomes]
        done = [o for o in done if o.result is not None]
        files = [o.result for o in done]
        if len(files) > 1:
            files.append(zip_results(files, session.next_preview() / "autocolor-results.zip"))
        sliders = [gr.ImageSlider(value=(str(o.before), str(o.after)), label=o.name, visible=True) for o in done]
        sliders += [gr.ImageSlider(value=None, visible=False)] * (self.config.max_images - len(done))
        return [str(f) for f in files] or None, sliders

    def _render_all(self, session: Session, how: Render, notes: list[str]) -> list:
        """Every photo rendered; the values of :attr:`RESULTS` outputs."""
        import gradio as gr

        if not session.photos and not session.refused:
            notes = notes + ["Upload a photo or click a sample first."]
        outcomes = list(session.refused)
        if session.photos:
            colorizer = self.state.models.get(how.model_label)
            rendered = colorize_photos(colorizer, session.photos, session.edits, how, session.next_result(),
                                       self.state.cache, self.state.gate, self.config.max_request_pixels)
            session.outcomes = {o.photo.key: o for o in rendered if o.photo is not None}
            outcomes += rendered
        for message in [o.error for o in outcomes if o.error] + notes:
            gr.Warning(message)
        editor, points = self._editor(session, how)
        downloads, sliders = self._results(session)
        return [status_text(outcomes, notes), downloads, editor, points, self._canvas(session), *sliders]

    def _canvas(self, session: Session):
        """The stroke painter, blank over the current photo's gray preview."""
        import gradio as gr

        photo = session.photo
        if photo is None:
            return gr.ImageEditor(value=None)
        path = session.next_preview() / f"{Path(photo.name).stem or 'image'}-gray.png"
        gray_image(photo).save(path)
        return gr.ImageEditor(value={"background": str(path), "layers": [], "composite": str(path)})

    # -- events

    def colorize(self, uploads, model_label, render_size, saturation, request: "gr.Request"):
        session, key = self.state.session(request), request.session_hash or ""
        with session.lock:
            how = self._how(session, model_label, render_size, saturation)
            paths = [Path(p) for p in (uploads or [])]
            notes = []
            if len(paths) > self.config.max_images:
                notes.append(f"Only the first {self.config.max_images} photos were used (the most per request).")
            mine = self.state.claim(key, paths[: self.config.max_images])
            if len(mine) < len(paths[: self.config.max_images]):
                notes.append("Some photos are no longer on the server (they expire after a while); upload them again.")
            if paths or not session.photos:
                self._load(session, key, [(p.name, p) for p in mine])
            return self._render_all(session, how, notes)

    def preview_uploads(self, uploads, request: "gr.Request"):
        """Thumbnails of the uploads as soon as they arrive (decoded once, kept for the edits)."""
        import gradio as gr

        session, key = self.state.session(request), request.session_hash or ""
        with session.lock:
            paths = [Path(p) for p in (uploads or [])][: self.config.max_images]
            self._load(session, key, [(p.name, p) for p in self.state.claim(key, paths)])
            if not session.photos:
                return gr.Gallery(value=None, visible=False), _problems(session.refused, [])
            folder, thumbs = session.next_preview(), []
            for i, photo in enumerate(session.photos):
                thumb = gray_image(photo)
                thumb.thumbnail((320, 320))
                thumb.save(folder / f"{i:02d}-{Path(photo.name).stem or 'image'}.jpg", quality=85)
                thumbs.append((str(folder / f"{i:02d}-{Path(photo.name).stem or 'image'}.jpg"), photo.name))
            notes = [n for p in session.photos for n in p.notes]
            return gr.Gallery(value=thumbs, visible=True), _problems(session.refused, notes)

    def settings_changed(self, uploads, model_label, render_size, saturation, request: "gr.Request"):
        """A new saturation, render size or model: re-render what is there (cached chroma
        where it can), and nothing at all before a photo is."""
        import gradio as gr

        if not self.state.session(request).photos:
            return [gr.skip()] * (5 + self.config.max_images)
        return self.colorize(uploads, model_label, render_size, saturation, request)

    def pick_sample(self, model_label, render_size, saturation, evt: "gr.SelectData", request: "gr.Request"):
        import gradio as gr

        session = self.state.session(request)
        with session.lock:
            how = self._how(session, model_label, render_size, saturation)
            sample = self.samples[int(evt.index)]
            self._load(session, request.session_hash or "", [(sample.name, sample)])
            return [None, gr.Gallery(value=None, visible=False), *self._render_all(session, how, [])]

    def select_photo(self, model_label, render_size, saturation, evt: "gr.SelectData", request: "gr.Request"):
        session = self.state.session(request)
        with session.lock:
            if 0 <= int(evt.index) < len(session.photos):
                session.current = int(evt.index)
            return (*self._editor(session, self._how(session, model_label, render_size, saturation)),
                    self._canvas(session))

    def _edited(self, session: Session, how: Render, change) -> tuple:
        """Apply ``change(edit)``, render; a change the model cannot take is undone and explained."""
        import gradio as gr

        if session.photo is None:
            gr.Warning("Upload a photo or click a sample first.")
            return None, points_html([]), "Upload a photo or click a sample first."
        edit = session.edit()
        saved = (list(edit.points), edit.reference, edit.reference_key, edit.scribble, edit.scribble_key)
        change(edit)
        try:
            return (*self._editor(session, how), gr.skip())
        except ValueError as exc:
            edit.points, edit.reference, edit.reference_key, edit.scribble, edit.scribble_key = saved
            message = f"{display_name(session.photo.name)}: {str(exc).splitlines()[0]}"
            gr.Warning(message)
            return (*self._editor(session, how), message)

    def click(self, color, model_label, render_size, saturation, evt: "gr.SelectData", request: "gr.Request"):
        session = self.state.session(request)
        with session.lock:
            how = self._how(session, model_label, render_size, saturation)
            if session.photo is None:
                return self._edited(session, how, lambda edit: None)
            x, y = session.photo.to_full(*evt.index)
            return self._edited(session, how, lambda edit: edit.add(x, y, color))

    def undo(self, model_label, render_size, saturation, request: "gr.Request"):
        return self._simple_edit(request, model_label, render_size, saturation, lambda edit: edit.undo())

    def clear(self, model_label, render_size, saturation, request: "gr.Request"):
        return self._simple_edit(request, model_label, render_size, saturation, lambda edit: edit.clear())

    def recolor(self, color, model_label, render_size, saturation, request: "gr.Request"):
        return self._simple_edit(request, model_label, render_size, saturation, lambda edit: edit.recolor_last(color))

    def swatch(self, color, model_label, render_size, saturation, request: "gr.Request"):
        return (color, *self.recolor(color, model_label, render_size, saturation, request))

    def reference(self, path, model_label, render_size, saturation, request: "gr.Request"):
        key = request.session_hash or ""
        mine = self.state.claim(key, [Path(path)]) if path else []
        if path and not mine:
            return None, points_html([]), "The reference photo is no longer on the server; upload it again."
        try:
            rgb = reference_pixels(mine[0], self.config.max_pixels) if mine else None
        except ImageError as exc:
            return self._simple_edit(request, model_label, render_size, saturation,
                                     lambda edit: None)[:2] + (f"Reference photo: {exc}",)

        def use(edit: Edit) -> None:
            edit.reference, edit.reference_key = rgb, (str(mine[0]) if mine else None)

        return self._simple_edit(request, model_label, render_size, saturation, use)

    def strokes(self, painted, model_label, render_size, saturation, request: "gr.Request"):
        """The painted layer becomes the photo's scribble (its colors spread like points)."""
        session = self.state.session(request)
        with session.lock:
            layers = (painted or {}).get("layers") or []
            layer = layers[0] if layers else None
            if session.photo is None:
                return self._edited(session, self._how(session, model_label, render_size, saturation), lambda e: None)
            scribble, key = scribble_from_layer(layer, session.photo)

            def use(edit: Edit) -> None:
                edit.scribble, edit.scribble_key = scribble, key

            return self._edited(session, self._how(session, model_label, render_size, saturation), use)

    def _simple_edit(self, request, model_label, render_size, saturation, change):
        session = self.state.session(request)
        with session.lock:
            return self._edited(session, self._how(session, model_label, render_size, saturation), change)

    def suggest(self, model_label, render_size, request: "gr.Request"):
        """Swatches of the model's likeliest colors at the last point (hidden when it cannot say)."""
        import gradio as gr

        session = self.state.session(request)
        hidden = [gr.Button(visible=False)] * SWATCHES + [""]
        with session.lock:
            if session.photo is None or not session.edit().points:
                return hidden
            photo, edit = session.photo, session.edit()
            colorizer = self.state.models.get(str(model_label))
            last = edit.points[-1]
            try:
                with self.state.gate.turn(session.visitor, photo.pixels.gray.size):
                    found = colorizer.suggest(photo.pixels.gray, last.x, last.y, k=SWATCHES,
                                              hints=edit.hints(exclude_last=True), render_size=int(render_size))
            except ValueError:  # a regression head or Levin: no distribution to show
                return hidden
        buttons = [gr.Button(value=color, visible=True) for color, _ in found]
        buttons += [gr.Button(visible=False)] * (SWATCHES - len(found))
        style = "".join(f"#swatch-{i} {{background:{c} !important; color:transparent !important}}"
                        for i, (c, _) in enumerate(found))
        return [*buttons, f"<style>{style}</style>"]

    def refresh(self, model_label, render_size, saturation, request: "gr.Request"):
        """The current photo's full-resolution file (after an edit) and the downloads."""
        session = self.state.session(request)
        with session.lock:
            photo = session.photo
            if photo is not None:
                how = self._how(session, model_label, render_size, saturation)
                colorizer = self.state.models.get(how.model_label)
                folder = session.next_result() / f"{session.current:02d}"
                outcome = render_outcome(colorizer, photo, session.edit(), how, folder, self.state.cache,
                                         self.state.gate)
                if outcome.result is not None:
                    session.outcomes[photo.key] = outcome
            downloads, sliders = self._results(session)
            return [downloads, *sliders]

    def compare(self, model_label, saturation, request: "gr.Request"):
        """The current photo at each of :data:`COMPARED_SIZES`, with its points' colors, for a gallery."""
        session = self.state.session(request)
        with session.lock:
            if session.photo is None:
                return None
            folder, shots = session.next_preview(), []
            for size in COMPARED_SIZES:
                how = self._how(session, model_label, size, saturation)
                ab = gated_chroma(self.state.models.get(how.model_label), session.photo, session.edit(), how,
                                  self.state.cache, self.state.gate)
                path = folder / f"render-{size}.jpg"
                preview_image(session.photo, ab, how.saturation).save(path, quality=88)
                shots.append((str(path), f"render size {size}"))
            return shots

    def colorize_video(self, upload, model_label, saturation, request: "gr.Request"):
        """The video tab: (colorized clip, its download, status)."""
        session, key = self.state.session(request), request.session_hash or ""
        with session.lock:
            saturation = float(saturation)
            if not 0.0 <= saturation <= 2.0:  # NaN fails this too
                raise ValueError(f"saturation {saturation!r} must be a number in 0-2")
            mine = self.state.claim(key, [Path(upload)] if upload else [])
            if not mine:
                text = "Upload a short clip first." if not upload else "The clip is no longer on the server; upload it again."
                return None, None, text
            colorizer = self.state.models.get(str(model_label))
            outcome = colorize_clip(colorizer, mine[0].name, mine[0], session.next_video(), self.config,
                                    self.state.gate, session.visitor, saturation)
            if outcome.result is None:
                return None, None, clip_status(outcome)
            return str(outcome.result), str(outcome.result), clip_status(outcome)

    def end(self, request: "gr.Request") -> None:
        self.state.end(request.session_hash or "")


def reference_pixels(path: Path, max_pixels: int):
    """A reference photo as ``(h, w, 3)`` uint8 RGB, shrunk to 512 px (its histogram is taken at 256)."""
    import numpy as np

    from autocolor.imageio import load_image

    size = header_size(path)
    if size is not None and (refusal := limit_message(path.name, *size, max_pixels)):
        raise ImageError(refusal)
    rgb = load_image(path, max_pixels).convert("RGB")
    rgb.thumbnail((512, 512))
    return np.asarray(rgb)


# ---------------------------------------------------------------- the page

CSS = """
#editor img { cursor: crosshair; }
#swatch-style { display: none; }  /* holds only a <style> for the swatches' colors */
.swatch-button { min-width: 2.5em !important; max-width: 3.5em; height: 2.2em; border: 2px solid #fff !important;
                 box-shadow: 0 0 0 1px #444; }
ol.points { margin: 0; padding-left: 1.2em; }
ol.points .swatch, .points-empty .swatch { display: inline-block; width: 0.9em; height: 0.9em;
                 border: 1px solid #444; vertical-align: middle; }
"""
# After a result arrives, bring the editor into view when it is off screen (on a phone it is below the controls).
SCROLL_TO_RESULT = """() => { const el = document.getElementById('editor');
  if (!el) return; const r = el.getBoundingClientRect();
  if (r.top < 0 || r.top > window.innerHeight * 0.6) el.scrollIntoView({block: 'start'}); }"""


def _controls(config: WebConfig) -> dict:
    """The left column: photos in, settings, status and downloads."""
    import gradio as gr

    labels = list(config.models)
    c = {}
    c["uploads"] = gr.File(label="Photos", file_count="multiple", file_types=["image"], elem_id="uploads")
    c["previews"] = gr.Gallery(label="Your photos: click one to edit it", columns=4, height=170, fit_columns=False,
                               object_fit="cover", allow_preview=False, visible=False, elem_id="previews", buttons=[])
    c["samples"] = gr.Gallery([(str(p), p.stem) for p in config.samples], label="…or click a sample",
                              columns=3, rows=2, height=250, object_fit="cover", allow_preview=False, visible=bool(config.samples),
                              elem_id="samples", buttons=[])
    c["model"] = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="model")
    c["render_size"] = gr.Dropdown(list(RENDER_SIZES), value=DEFAULT_RENDER_SIZE, elem_id="render-size",
                                   label="Render size (the model sees about this many pixels squared)")
    c["saturation"] = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Saturation", elem_id="saturation")
    c["button"] = gr.Button("Colorize", variant="primary", elem_id="colorize")
    c["status"] = gr.Markdown(elem_id="status")
    c["downloads"] = gr.File(label="Full-resolution results (several: also all in one zip)",
                             file_count="multiple", interactive=False, elem_id="downloads")
    return c


def _editor(config: WebConfig) -> dict:
    """The right column: the photo to click on, its points and swatches, the reference, the comparison."""
    import gradio as gr

    c = {}
    c["editor"] = gr.Image(label="Result: click on it to put a color point there", type="filepath",
                           interactive=False, elem_id="editor", buttons=["fullscreen"])
    with gr.Row():
        c["color"] = gr.ColorPicker(DEFAULT_POINT_COLOR, label="Point color", elem_id="point-color", scale=1)
        c["undo"] = gr.Button("Undo point", elem_id="undo", scale=1)
        c["clear"] = gr.Button("Clear points", elem_id="clear", scale=1)
    with gr.Row(elem_id="swatches"):
        c["swatches"] = [gr.Button(visible=False, elem_id=f"swatch-{i}", elem_classes=["swatch-button"],
                                   min_width=40) for i in range(SWATCHES)]
    c["swatch_style"] = gr.HTML("", elem_id="swatch-style")
    c["points"] = gr.HTML(points_html([]), elem_id="points")
    with gr.Accordion("Reference photo: colors like this one", open=False):
        c["reference"] = gr.Image(type="filepath", label="Reference photo", sources=["upload"], elem_id="reference")
    with gr.Accordion("Paint strokes: colors for whole areas", open=False):
        c["scribble"] = gr.ImageEditor(type="numpy", label="Paint on the photo, then apply", sources=[],
                                       transforms=(), layers=False, elem_id="scribble",
                                       brush=gr.Brush(colors=["#6d9ed8", "#6f8f3a", "#c8a27c", "#8a7560", "#b03030"],
                                                      color_mode="defaults"))
        c["apply"] = gr.Button("Apply strokes", elem_id="apply-strokes")
    with gr.Accordion("Compare render sizes", open=False):
        c["compare"] = gr.Button(f"Show this photo at render sizes {', '.join(map(str, COMPARED_SIZES))}",
                                 elem_id="compare")
        c["strip"] = gr.Gallery(columns=len(COMPARED_SIZES), height="auto", elem_id="render-strip")
    c["sliders"] = [
        gr.ImageSlider(visible=False, interactive=False, format="jpeg", buttons=["fullscreen"],
                       max_height=720, elem_id=f"slider-{i}", elem_classes=["result-slider"])
        for i in range(config.max_images)
    ]
    return c


def _video_tab(handlers: Handlers, config: WebConfig) -> dict:
    """The video tab: a short clip in, the same colorize_video as the command line, the colorized clip out."""
    import gradio as gr

    labels = list(config.models)
    c = {}
    gr.Markdown(f"Colorize a short black-and-white clip (up to {config.max_video_seconds:g} s and "
                f"{config.max_video_pixels:,} pixels a frame, such as 640x480): colors are steadied "
                "along the motion, and the sound is kept. Longer films: `autocolor colorize film.mp4 -o out/`.")
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            c["clip"] = gr.Video(label="Clip", sources=["upload"], format=None, elem_id="video-upload")
            c["model"] = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="video-model")
            c["saturation"] = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Saturation",
                                        elem_id="video-saturation")
            c["button"] = gr.Button("Colorize video", variant="primary", elem_id="colorize-video")
            c["status"] = gr.Markdown(elem_id="video-status")
        with gr.Column(scale=2, min_width=320):
            c["result"] = gr.Video(label="Colorized", interactive=False, format=None, buttons=["download"],
                                   elem_id="video-result")
            c["download"] = gr.File(label="Download", interactive=False, elem_id="video-download")
    c["button"].click(handlers.colorize_video, [c["clip"], c["model"], c["saturation"]],
                      [c["result"], c["download"], c["status"]], api_name="colorize_video",
                      concurrency_limit=config.workers)
    return c


def _wire(handlers: Handlers, c: dict, config: WebConfig) -> None:
    """Events: what each control runs, and with which inputs and outputs."""
    settings = [c["model"], c["render_size"], c["saturation"]]
    results = [c["status"], c["downloads"], c["editor"], c["points"], c["scribble"], *c["sliders"]]
    edited = [c["editor"], c["points"], c["status"]]
    refresh = {"fn": handlers.refresh, "inputs": settings, "outputs": [c["downloads"], *c["sliders"]]}
    suggest = {"fn": handlers.suggest, "inputs": [c["model"], c["render_size"]],
               "outputs": [*c["swatches"], c["swatch_style"]]}
    c["button"].click(handlers.colorize, [c["uploads"], *settings], results, api_name="colorize",
                      concurrency_limit=config.workers).then(None, js=SCROLL_TO_RESULT)
    c["uploads"].upload(handlers.preview_uploads, c["uploads"], [c["previews"], c["status"]], api_name=False)
    c["previews"].select(handlers.select_photo, settings, [c["editor"], c["points"], c["scribble"]], api_name=False)
    c["samples"].select(handlers.pick_sample, settings, [c["uploads"], c["previews"], *results], api_name=False,
                        concurrency_limit=config.workers).then(None, js=SCROLL_TO_RESULT)
    for control in (c["saturation"], c["render_size"], c["model"]):  # cached chroma: a re-merge where it can
        event = c["saturation"].release if control is c["saturation"] else control.input
        event(handlers.settings_changed, [c["uploads"], *settings], results, api_name=False,
              concurrency_limit=config.workers)
    c["editor"].select(handlers.click, [c["color"], *settings], edited, api_name="add_point",
                       concurrency_limit=config.workers).then(**suggest).then(**refresh)
    c["undo"].click(handlers.undo, settings, edited, api_name=False).then(**refresh)
    c["clear"].click(handlers.clear, settings, edited, api_name=False).then(**refresh)
    c["color"].input(handlers.recolor, [c["color"], *settings], edited, api_name=False).then(**refresh)
    for swatch in c["swatches"]:
        swatch.click(handlers.swatch, [swatch, *settings], [c["color"], *edited], api_name=False).then(**refresh)
    c["reference"].change(handlers.reference, [c["reference"], *settings], edited, api_name=False).then(**refresh)
    c["apply"].click(handlers.strokes, [c["scribble"], *settings], edited, api_name=False).then(**refresh)
    c["compare"].click(handlers.compare, [c["model"], c["saturation"]], c["strip"], api_name=False)


def build_app(config: WebConfig, workdir: Path, state: WebState | None = None) -> "gr.Blocks":
    """The demo's page, its event handlers and its bounded queue.

    ``workdir`` must be Gradio's upload folder (``GRADIO_TEMP_DIR``, see :func:`serve`):
    results written there are served in place, not copied into Gradio's cache,
    so deleting a session's files when its tab closes leaves nothing behind.
    """
    global gr  # the handlers' "gr.Request" annotations resolve through this module's globals
    import gradio as gr
    from gradio.utils import get_upload_folder

    assert Path(get_upload_folder()).resolve() == workdir.resolve(), "workdir must be GRADIO_TEMP_DIR"
    handlers = Handlers(state or WebState(config, workdir))
    with gr.Blocks(title="autocolor", analytics_enabled=False,
                   delete_cache=(config.cleanup_every_s, config.keep_files_s)) as demo:
        gr.Markdown("# autocolor\nColorize black-and-white photos, then click on the result to say which "
                    "color belongs where.")
        with gr.Tab("Photos", elem_id="photos-tab"), gr.Row():
            with gr.Column(scale=1, min_width=320):
                controls = _controls(config)
            with gr.Column(scale=2, min_width=320):
                editor = _editor(config)
        with gr.Tab("Video", elem_id="video-tab"):
            _video_tab(handlers, config)
        _wire(handlers, {**controls, **editor}, config)
        demo.unload(handlers.end)
    demo.autocolor_state = handlers.state  # serve() adds the upload route and the sweeper over it
    return demo.queue(default_concurrency_limit=config.workers, max_size=config.queue_size)


# ---------------------------------------------------------------- the server


def add_upload_route(app, demo: "gr.Blocks", state: WebState, max_file_size: int) -> None:
    """Replace Gradio's upload endpoint (which takes 1,000 files a request and
    stores identical uploads of two visitors as one file) by one that takes at
    most ``max_images`` files, within the visitor's quota, each in a folder of its own."""
    import fastapi
    from fastapi.responses import JSONResponse, PlainTextResponse
    from gradio.route_utils import (
        GradioMultiPartParser,
        GradioUploadFile,
        MultiPartException,
    )
    from gradio.routes import file_upload_statuses
    from gradio_client.utils import strip_invalid_filename_characters

    config = state.config

    async def upload(request: fastapi.Request, upload_id: str | None = None):
        visitor = request.client.host if request.client else "unknown"
        if refusal := state.quota.refusal(visitor, files=1):
            return PlainTextResponse(refusal, status_code=429)
        parser = GradioMultiPartParser(
            request.headers, request.stream(), max_files=config.max_images, max_fields=config.max_images + 10,
            upload_dir=str(state.uploads.root), max_file_size=max_file_size, upload_id=upload_id,
            upload_progress=file_upload_statuses if upload_id else None,
        )
        state.uploads.root.mkdir(parents=True, exist_ok=True)
        if upload_id:
            file_upload_statuses.track(upload_id)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            too_big = "maximum allowed size" in exc.message or "Too many files" in exc.message
            return PlainTextResponse(exc.message, status_code=413 if too_big else 400)
        files = [f for f in form.getlist("files") if isinstance(f, GradioUploadFile)]
        sizes = [Path(f.file.name).stat().st_size for f in files]
        if refusal := state.quota.refusal(visitor, files=len(files), size=sum(sizes)):
            for f in files:
                f.file.close()
                Path(f.file.name).unlink(missing_ok=True)
            return PlainTextResponse(refusal, status_code=429)
        state.quota.record(visitor, sizes)
        stored = []
        for f in files:
            name = strip_invalid_filename_characters(Path(f.filename or "").name) or "upload"
            target = state.uploads.new_path(name if name not in (".", "..") else "upload")
            f.file.close()
            os.replace(f.file.name, target)
            stored.append(str(target))
        demo.upload_file_set.update(stored)
        return JSONResponse(stored)

    for path in ("/gradio_api/upload", "/upload"):
        app.add_api_route(path, upload, methods=["POST"])


def _parse_size(text: str) -> int:
    from gradio.utils import _parse_file_size

    return _parse_file_size(text)


def serve(config: WebConfig, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Run the demo until interrupted (Ctrl-C or SIGTERM), then delete every file it kept.

    Folders left by earlier servers that were killed before they could clean up
    (SIGKILL, the OOM killer) are deleted first.
    """
    for folder in remove_leftovers():
        print(f"removed the files of an earlier server that did not stop cleanly: {folder}", flush=True)
    workdir = make_workdir()
    # Gradio reads these when components are built and files are served: everything it
    # stores, and everything it may serve, stays inside the app's own folder.
    os.environ["GRADIO_TEMP_DIR"] = str(workdir)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workdir / "examples")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    stop = threading.Event()
    try:
        import fastapi
        import gradio as gr
        import uvicorn

        state = WebState(config, workdir)
        demo = build_app(config, workdir, state)
        app = fastapi.FastAPI()
        max_bytes = _parse_size(config.max_file_size)
        add_upload_route(app, demo, state, max_bytes)
        app = gr.mount_gradio_app(app, demo, path="", max_file_size=max_bytes, allowed_paths=[],
                                  show_error=False, ssr_mode=False, footer_links=[], css=CSS)
        threading.Thread(target=_sweep, args=(state, stop, 30.0), daemon=True).start()
        print(f"autocolor web demo on http://{host}:{port} (temporary files in {workdir})", flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workdir, ignore_errors=True)


def _sweep(state: WebState, stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        state.sweep()
