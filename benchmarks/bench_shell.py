"""How long one small photo takes from the shell, against Python's own start-up.

Times, in the same run and interleaved (so a busy machine slows every row
alike), fresh processes of::

    python -c pass
    autocolor --help
    autocolor colorize small.jpg -o out.jpg --backend onnxruntime   # the cached graph, no PyTorch
    autocolor colorize small.jpg -o out.jpg --backend onnxruntime --no-faces
    autocolor colorize small.jpg -o out.jpg                         # the PyTorch backend

each ``--repeat`` times, and prints a Markdown table of the median wall time,
its ratio to ``python -c pass``, and the median CPU time (user + system of the
process and its children). The photo is a bundled sample (640 x 400 gray
JPEG). The ONNX cache lives in a temporary folder; the first onnxruntime run
(which exports the graph with PyTorch) is timed on its own and not in the
medians.

    python benchmarks/bench_shell.py                 # from a checkout: runs src/ with this Python
    python benchmarks/bench_shell.py --installed     # the ``autocolor`` command on PATH instead
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command`` (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr.decode(errors='replace')}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7, help="runs of each command")
    p.add_argument("--photo", type=Path, default=REPO / "src" / "autocolor" / "samples" / "boats.jpg")
    p.add_argument("--installed", action="store_true", help="time the autocolor command on PATH, not src/")
    args = p.parse_args()

    load = os.getloadavg()[0]
    env = {**os.environ}
    if args.installed:
        found = shutil.which("autocolor")
        if found is None:
            raise SystemExit("no autocolor command on PATH")
        autocolor = [found]
    else:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
        autocolor = [sys.executable, "-m", "autocolor"]
    with tempfile.TemporaryDirectory(prefix="bench-shell-") as tmp:
        env["AUTOCOLOR_CACHE"] = str(Path(tmp) / "cache")
        photo = Path(tmp) / "small.jpg"
        photo.write_bytes(args.photo.read_bytes())
        out = str(Path(tmp) / "out.jpg")
        colorize = [*autocolor, "colorize", str(photo), "-o", out, "--overwrite", "--no-progress"]
        rows = {
            "`python -c pass`": [sys.executable, "-c", "pass"],
            "`autocolor --help`": [*autocolor, "--help"],
            "`autocolor colorize small.jpg --backend onnxruntime`": [*colorize, "--backend", "onnxruntime"],
            "the same with `--no-faces` (no face detector)": [*colorize, "--backend", "onnxruntime", "--no-faces"],
            "`autocolor colorize small.jpg` (PyTorch backend)": colorize,
        }
        first_wall, first_cpu = timed(rows["`autocolor colorize small.jpg --backend onnxruntime`"], env)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
        for _ in range(args.repeat):
            for name, command in rows.items():
                times[name].append(timed(command, env))
    base = statistics.median(wall for wall, _ in times["`python -c pass`"])
    print(f"{args.photo.name}, {args.repeat} runs each, interleaved; load average at the start: "
          f"{load:.1f}; {os.cpu_count()} CPUs\n")
    print("| command | wall (median) | x `python -c pass` | CPU (median) |")
    print("|---|---:|---:|---:|")
    for name, samples in times.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        print(f"| {name} | {wall:.2f} s | {wall / base:.1f}x | {cpu:.2f} s |")
    print(f"\nFirst onnxruntime run (exports the graph with PyTorch, then caches it): {first_wall:.1f} s wall, "
          f"{first_cpu:.1f} s CPU.")


if __name__ == "__main__":
    main()
