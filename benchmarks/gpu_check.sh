#!/usr/bin/env bash
# The GPU check in one call (benchmarks/README.md, "GPU check"):
#   benchmarks/gpu_check.sh OUT_DIR BUDGET_MINUTES [--data-root DIR] [--dry-run]
# On a CUDA machine: tests, benchmarks, sync audit, repeatability, CPU vs GPU, resume, then the
# published study's seeds 43 and 44 while time remains; everything lands in OUT_DIR (copy it back).
# --dry-run: the same on the CPU at tiny sizes (the test suite runs it).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OUT_DIR BUDGET_MINUTES [--data-root DIR] [--dry-run]" >&2
  exit 2
fi
out=$1
budget=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
exec "${PYTHON:-python}" "$here/gpu_check.py" --out "$out" --budget-minutes "$budget" "$@"
