#!/usr/bin/env bash
# Set up (if needed), install the headless browser for the web test, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/install-browser.sh ]; then
  bash scripts/install-browser.sh
fi
exec .venv/bin/python -m pytest -q "$@"
