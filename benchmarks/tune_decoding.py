"""Pick a chroma model's decoding (temperature, chroma scale) on the validation split.

    python benchmarks/tune_decoding.py runs/chroma-ce --data folder:data/photos2 \
        --temperatures 0.2,0.3,0.38,0.5,0.7,1.0

The temperature moves the decoded color between the distribution's mode
(vivid, T -> 0) and its mean (muted, T = 1). For each T this prints CIEDE2000
(and its ratio to the grey copy's) and the colorfulness ratio at 256x256 on
the val split, so the choice never looks at the test split. Each T is
evaluated as a model folder whose config differs only in ``temperature``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from autocolor.checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_config
from autocolor.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="model folder (model.safetensors + config.json)")
    parser.add_argument("--data", default="folder:data/photos2", help="data spec")
    parser.add_argument("--temperatures", default="0.2,0.3,0.38,0.5,0.7,1.0", help="comma-separated")
    parser.add_argument("--scales", default="1.0", help="comma-separated chroma_scale values")
    parser.add_argument("--size", type=int, default=256, help="evaluation size")
    parser.add_argument("--split", default="val", help="val (never tune on test)")
    args = parser.parse_args()
    config = read_config(args.model)
    specs = ["grey"]
    with tempfile.TemporaryDirectory() as tmp:
        for t in (float(x) for x in args.temperatures.split(",")):
            for scale in (float(x) for x in args.scales.split(",")):
                folder = Path(tmp) / f"T{t:g}-s{scale:g}"
                folder.mkdir()
                (folder / WEIGHTS_NAME).symlink_to((args.model / WEIGHTS_NAME).resolve())
                kwargs = {**config.get("kwargs", {}), "temperature": t, "chroma_scale": scale}
                (folder / CONFIG_NAME).write_text(json.dumps({**config, "kwargs": kwargs}))
                specs.append(f"T{t:g}-s{scale:g}={folder}")
        report = evaluate(specs, args.data, sizes=(args.size,), n=None, split=args.split,
                          saturations=[0.5, 0.75, 1.0, 1.25, 1.5])
    (result,) = report["results"]
    print(f"{args.split} split, {result['n_images']} images at {args.size}px; "
          f"grey copy CIEDE2000 {result['grey_ciede2000']:.2f}\n")
    print("| decoding | CIEDE2000 | vs grey | colorfulness ratio | vs grey at colorfulness 0.8 | at 1.0 | PSNR |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for row in result["models"]:
        at = row["ciede2000_at_colorfulness_vs_grey"]
        print(f"| {row['label']} | {row['ciede2000']:.2f} | {row['ciede2000_vs_grey']:.3f} | "
              f"{row['colorfulness_ratio']:.2f} | {fmt(at.get('0.8'))} | {fmt(at.get('1'))} | {row['psnr']:.2f} |")


if __name__ == "__main__":
    main()
