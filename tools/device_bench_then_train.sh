#!/usr/bin/env bash
# One lent-GPU call that measures the training step's variants, then trains with the fastest
# for the rest of the call (see tools/device_train.sh for the schedule's environment).
# Usage: CALL_SECONDS=590 [PHASE_START=…] … tools/device_bench_then_train.sh [INIT_DIR]
#   Runs benchmarks/train_speed.py (all tiers, MoE grouped/dense × batch scale 1/2),
#   lets tools/pick_train_variant.py choose (see there), writes the choice to
#   $OUT/variant.env and trains for the minutes left (less a minute for start and export).
set -uo pipefail
start=$SECONDS
source tools/device_setup.sh
OPTICMEM_SYNTH_DIR="$PWD/data/synth" timeout 260 python3 -m benchmarks.train_speed \
  --workers 14 --seconds 20 --steps 6 --warmup 2 --out "$OUT/train_speed_h200.md" 2>&1 | tail -3
python3 tools/pick_train_variant.py "$OUT/train_speed_h200.md" > "$OUT/variant.env"
cat "$OUT/variant.env"
set -a; source "$OUT/variant.env"; set +a
left=$(( ${CALL_SECONDS:-590} - (SECONDS - start) - 60 ))
minutes=$(python3 -c "print(max(0.5, round($left / 60, 2)))")
echo "training $minutes minutes with MOE=$MOE BATCH_SCALE=$BATCH_SCALE"
bash tools/device_train.sh "$minutes" ${1:-}
