#!/usr/bin/env bash
# One GPU check (experiments/gpu_check.py): steps/s and peak memory per memory preset and precision, the
# released attention capture, `experiment=official` end to end and generation speed, as a markdown table.
# Nothing is downloaded. Planned to fit in 8 minutes on one H100 (not yet run on a GPU); `--device cpu` runs
# the same path with the tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" experiments/gpu_check.py "$@"
