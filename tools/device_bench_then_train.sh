#!/usr/bin/env bash
# One lent-GPU call that measures the training step's variants, then trains with the fastest
# for the rest of the call (see tools/device_train.sh for the schedule's environment).
# Usage: CALL_SECONDS=590 [PHASE_START=…] … tools/device_bench_then_train.sh [INIT_DIR]
#   Runs benchmarks/train_speed.py (all tiers, MoE grouped/dense × batch scale 1/2),
#   picks the MoE path with the best mix rate at scale 1 — and scale 2 only if it beats
#   that by 25% while the step, not the loader, bounds it — writes the choice to
#   $OUT/variant.env and trains for the minutes left (less a minute for start and export).
set -uo pipefail
start=$SECONDS
source tools/device_setup.sh
OPTICMEM_SYNTH_DIR="$PWD/data/synth" timeout 260 python3 -m benchmarks.train_speed \
  --workers 14 --seconds 20 --steps 6 --warmup 2 --out "$OUT/train_speed_h200.md" 2>&1 | tail -3
python3 - "$OUT/train_speed_h200.md" > "$OUT/variant.env" <<'PY'
import re, sys
rows = []
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"\| (grouped|dense) \| ([\d.]+) \| (\d+) \| (\w+|–) \|$", line.strip())
    if m:
        rows.append((m[1], float(m[2]), float(m[3]), m[4]))
one = [r for r in rows if r[1] == 1] or [("grouped", 1.0, 0.0, "–")]
best = max(one, key=lambda r: r[2])
two = [r for r in rows if r[1] == 2 and r[0] == best[0]]
scale = 2 if two and two[0][2] > 1.25 * best[2] and two[0][3] == "step" else 1
print(f"MOE={best[0]}\nBATCH_SCALE={scale}")
PY
cat "$OUT/variant.env"
set -a; source "$OUT/variant.env"; set +a
left=$(( ${CALL_SECONDS:-590} - (SECONDS - start) - 60 ))
minutes=$(python3 -c "print(max(0.5, round($left / 60, 2)))")
echo "training $minutes minutes with MOE=$MOE BATCH_SCALE=$BATCH_SCALE"
bash tools/device_train.sh "$minutes" ${1:-}
