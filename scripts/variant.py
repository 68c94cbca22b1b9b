#!/usr/bin/env python
"""Make a model folder that reuses a trained model's weights with other settings.

    python scripts/variant.py runs/chroma runs/chroma-zhang prior_correction=0 temperature=0.2 chroma_scale=0.57
    python scripts/variant.py src/autocolor/weights/default runs/vivid chroma_scale=2

Values are JSON (numbers, true/false, "strings"). The variant is an ordinary
model folder for ``autocolor colorize --model``, ``serve`` and ``evaluate``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from autocolor.checkpoint import CheckpointError, save_variant


def main(argv: list[str]) -> int:
    if len(argv) < 3 or any("=" not in a for a in argv[2:]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    kwargs = {}
    for item in argv[2:]:
        key, _, value = item.partition("=")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    try:
        save_variant(Path(argv[0]), Path(argv[1]), **kwargs)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {argv[1]} ({', '.join(argv[2:])})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
