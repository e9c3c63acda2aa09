#!/usr/bin/env bash
# The project's complete test command (CI runs exactly this): every notebook cell not flagged
# `#| slow` / `#| cuda`, then the pytest suite. Offline; exits non-zero on any failure.
#   bash tools/test.sh            # extra arguments go to pytest, e.g. bash tools/test.sh -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# two notebooks at a time, one thread each: two 2-thread OpenMP processes on 2 cores slow each other down several-fold
OMP_NUM_THREADS=1 nbdev_test --n_workers 2
pytest -q tests "$@"
