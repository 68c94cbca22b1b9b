"""Pick a chroma model's decoding (temperature, chroma scale) on the validation split.

    python benchmarks/tune_decoding.py runs/chroma-ce --data folder:data/photos2 \
        --temperatures 0.3,0.38,0.5 --scales 1.25,1.5,1.75,2

The temperature moves the decoded color between the distribution's mode
(vivid, T -> 0) and its mean (muted, T = 1); the chroma scale multiplies the
result. For each setting this prints CIEDE2000 (and its ratio to the grey
copy's), PSNR and the colorfulness ratio at 256x256 on the val split, so the
choice never looks at the test split. Each setting is evaluated as a model
folder whose config differs only in ``temperature`` and ``chroma_scale``.

The rule that picks the shipped setting: among the settings whose val
CIEDE2000 is below the grey copy's, the one whose colorfulness ratio is
nearest ``--target-colorfulness`` (0.85: vivid, the low end of the band where
colors are as saturated as the truth's, and CIEDE2000 grows with saturation).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from autocolor.checkpoint import save_variant
from autocolor.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="model folder (model.safetensors + config.json)")
    parser.add_argument("--data", default="folder:data/photos2", help="data spec")
    parser.add_argument("--temperatures", default="0.2,0.3,0.38,0.5,0.7,1.0", help="comma-separated")
    parser.add_argument("--scales", default="1.0", help="comma-separated chroma_scale values")
    parser.add_argument("--size", type=int, default=256, help="evaluation size")
    parser.add_argument("--split", default="val", help="val (never tune on test)")
    parser.add_argument("--target-colorfulness", type=float, default=0.85, help="see the rule above")
    args = parser.parse_args()
    specs = ["grey"]
    with tempfile.TemporaryDirectory() as tmp:
        for t in (float(x) for x in args.temperatures.split(",")):
            for scale in (float(x) for x in args.scales.split(",")):
                folder = Path(tmp) / f"T{t:g}-s{scale:g}"
                save_variant(args.model, folder, link=True, temperature=t, chroma_scale=scale)
                specs.append(f"T{t:g}-s{scale:g}={folder}")
        report = evaluate(specs, args.data, sizes=(args.size,), n=None, split=args.split,
                          saturations=[0.5, 0.75, 1.0, 1.25, 1.5])
    (result,) = report["results"]
    print(f"{args.split} split, {result['n_images']} images at {args.size}px; "
          f"grey copy CIEDE2000 {result['grey_ciede2000']:.2f}\n")
    print("| decoding | CIEDE2000 | vs grey | colorfulness ratio | PSNR | vs grey at colorfulness 0.85 | at 1.0 |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for row in result["models"]:
        at = row["ciede2000_at_colorfulness_vs_grey"]
        print(f"| {row['label']} | {row['ciede2000']:.2f} | {row['ciede2000_vs_grey']:.3f} | "
              f"{row['colorfulness_ratio']:.2f} | {row['psnr']:.2f} | {fmt(at.get('0.85'))} | {fmt(at.get('1'))} |")
    eligible = [r for r in result["models"] if r["label"] != "grey" and r["ciede2000_vs_grey"] < 1.0]
    if eligible:
        best = min(eligible, key=lambda r: abs(r["colorfulness_ratio"] - args.target_colorfulness))
        print(f"\nchosen by the rule: {best['label']}")
    else:
        print("\nno setting is below the grey copy's CIEDE2000")


if __name__ == "__main__":
    main()
