#!/usr/bin/env bash
# The long fuzz run: AUTOCOLOR_FUZZ_EXAMPLES cases (default 5000) of each kind (mutated files,
# random bytes behind each format's magic), fresh random draws each run; counts go to stdout
# and to benchmarks/fuzz_long.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export AUTOCOLOR_FUZZ_EXAMPLES="${AUTOCOLOR_FUZZ_EXAMPLES:-5000}"
export AUTOCOLOR_FUZZ_REPORT="${AUTOCOLOR_FUZZ_REPORT:-benchmarks/fuzz_long.txt}"
: > "$AUTOCOLOR_FUZZ_REPORT"
python="${PYTHON:-.venv/bin/python}"
started=$(date +%s)
"$python" -m pytest tests/test_fuzz.py -q -s -p no:cacheprovider -k fuzz_load "$@"
echo "wall $(( $(date +%s) - started )) s, $(nproc) CPUs shared with other work" | tee -a "$AUTOCOLOR_FUZZ_REPORT"
