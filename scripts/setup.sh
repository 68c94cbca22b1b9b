#!/usr/bin/env bash
# Create .venv and install autocolor with every extra (ONNX, web demo, tests).
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch/torchvision are pinned in constraints.txt (on this kind of machine pip
# takes them from local disk); the package itself keeps open ranges.
if ! .venv/bin/python -c "import autocolor, torch, torchvision, kornia, onnxruntime, gradio" 2>/dev/null; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -c constraints.txt -e ".[all]"
fi
.venv/bin/python -c "import autocolor, torch; print(f'autocolor {autocolor.__version__} ready (torch {torch.__version__})')"
