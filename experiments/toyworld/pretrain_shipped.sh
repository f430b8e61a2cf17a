#!/usr/bin/env bash
# The shipped toy model (src/break_a_scene/assets/toyworld/model) from scratch, in its two stages:
#   1. 4,000 steps under SD's noise schedule (epsilon, scaled-linear betas): about 70 minutes on 2 CPU cores;
#   2. 3,000 more from stage 1's export under zero terminal SNR, v-prediction and trailing timesteps
#      (conf/pretrain.yaml's noise_schedule), fresh AdamW, EMA 0.998, seed 1: about 80 minutes.
# Each stage checkpoints every 250 steps; rerunning this script resumes the stage it stopped in.
# The shipped run was resumed at 3,000 steps in stage 1 and at 1,000 and 2,000 in stage 2: an uninterrupted
# run sees the same data but draws other noise, so it ends near, not at, the shipped weights.
#   bash experiments/toyworld/pretrain_shipped.sh [OUT [OVERRIDES...]]   (OUT: outputs/pretrain_shipped)
# OVERRIDES go to both stages (e.g. trainer=gpu on a GPU); STAGE1_STEPS / STAGE2_STEPS shorten a trial run.
set -euo pipefail
out=${1:-outputs/pretrain_shipped}
shift $(( $# > 0 ? 1 : 0 ))
bin=${BIN:-.venv/bin}
resume() { [ -f "$1/checkpoints/last.ckpt" ] && echo "ckpt_path=last overwrite=true" || true; }

if [ ! -f "$out/stage1/toyworld_model/model_index.json" ]; then
  # shellcheck disable=SC2046
  "$bin/bas-pretrain" noise_schedule=null denoiser.steps="${STAGE1_STEPS:-4000}" hydra.run.dir="$out/stage1" \
    $(resume "$out/stage1") "$@"
fi
# shellcheck disable=SC2046
"$bin/bas-pretrain" init_from="$out/stage1/toyworld_model" seed=1 denoiser.steps="${STAGE2_STEPS:-3000}" \
  denoiser.ema_decay=0.998 hydra.run.dir="$out/stage2" $(resume "$out/stage2") "$@"
echo "the toy model: $out/stage2/toyworld_model (measure it: python experiments/toyworld/measure_quality.py --model ...)"
