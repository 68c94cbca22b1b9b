"""The README's main job: colorize the bundled samples and show before/after."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from autocolor.checkpoint import atomic_write_bytes
from autocolor.imageio import ImageError
from autocolor.inference import Colorizer, colorize_files, plan_jobs


def samples_dir() -> Path:
    """The bundled sample photos (``autocolor/samples/``, installed with the package)."""
    return Path(__file__).resolve().parent / "samples"


def before_after(pairs: list[tuple[Path, Path]], height: int = 240) -> Image.Image:
    """One image: a row per photo, gray input left and colorized output right."""
    rows = []
    for before, after in pairs:
        with Image.open(before) as b, Image.open(after) as a:
            width = round(b.width * height / b.height)
            row = Image.new("RGB", (2 * width + 8, height), "white")
            row.paste(b.convert("RGB").resize((width, height), Image.LANCZOS), (0, 0))
            row.paste(a.convert("RGB").resize((width, height), Image.LANCZOS), (width + 8, 0))
            rows.append(row)
    canvas = Image.new("RGB", (max(r.width for r in rows), sum(r.height + 8 for r in rows) - 8), "white")
    y = 0
    for row in rows:
        canvas.paste(row, (0, y))
        y += row.height + 8
    return canvas


def run_demo(out: Path, model: str = "default", samples: Path | None = None, progress: bool | None = None) -> Path:
    """Colorize every sample into ``out/samples`` and write ``out/before_after.png``
    (a progress bar only when stderr is a terminal, unless ``progress`` says)."""
    import io
    import sys

    samples = samples or samples_dir()
    if not samples.is_dir():
        raise ImageError(f"{samples}: no sample photos here (the package ships them in autocolor/samples/; "
                         "reinstall autocolor)")
    jobs, problems = plan_jobs([str(samples)], out / "samples")
    for path, reason in problems:
        print(f"{path}: {reason}")
    colorizer = Colorizer.load(model)
    progress = sys.stderr.isatty() if progress is None else progress
    summary = colorize_files(colorizer, jobs, overwrite=True, progress=progress)
    print(summary.line())
    done = [(j.source, j.target) for j in jobs if j.target.exists()]
    if not done:
        raise ImageError(f"{samples}: nothing was colorized")
    buffer = io.BytesIO()
    before_after(done).save(buffer, format="PNG")
    target = out / "before_after.png"
    atomic_write_bytes(target, buffer.getvalue())
    print(f"colorized {len(done)} photos into {out / 'samples'}; before/after: {target}")
    return target


__all__ = ["before_after", "run_demo", "samples_dir"]
