#!/usr/bin/env bash
# The toy world's MM-DiT (src/break_a_scene/assets/toyworld/mmdit) from scratch: conf/model/toyworld_mmdit_init.yaml
# trained by rectified flow (logit-normal sigmas, unshifted) for 8,000 steps of 32 freshly drawn scenes, AdamW
# 5e-4, EMA 0.999, seed 0: about 0.65 s a step on 2 CPU cores with nothing else running.
# It checkpoints every 250 steps; rerunning this script resumes where it stopped.
#   bash experiments/toyworld/pretrain_mmdit.sh [OUT [OVERRIDES...]]   (OUT: outputs/pretrain_mmdit)
# OVERRIDES go to bas-pretrain (e.g. trainer=gpu); STEPS shortens a trial run.
set -euo pipefail
out=${1:-outputs/pretrain_mmdit}
shift $(( $# > 0 ? 1 : 0 ))
bin=${BIN:-.venv/bin}
resume=()
[ -f "$out/checkpoints/last.ckpt" ] && resume=(ckpt_path=last overwrite=true)
"$bin/bas-pretrain" model=toyworld_mmdit_init denoiser.steps="${STEPS:-8000}" hydra.run.dir="$out" \
  "${resume[@]}" "$@"
echo "the toy MM-DiT: $out/toyworld_model (measure it: python experiments/toyworld/measure_quality.py" \
  "--model $out/toyworld_model --family break_a_scene.families.toy_mmdit.ToyMMDiT)"
