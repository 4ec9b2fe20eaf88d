#!/usr/bin/env bash
# GPU speed benchmarks on the lent GPU machine; each writes its table to $OUT.
# Usage: tools/device_bench.sh [STEP...]   (repository root; carry .whl, and .ref for
#   `reference` and `refdecode` — see tools/fetch_reference.sh and, for refdecode's wheels,
#   benchmarks/reference_decode_speed.py; codec pages come from the packaged eval sources).
#   Steps, all by default:
#   profile    benchmarks/decode_profile.py: eager vs CUDA-graph decoding step
#   decode     benchmarks/encoder_speed.py decode tokens/s with CUDA graphs (official preset)
#   codec      benchmarks/codec_speed.py, bundled codec with CUDA graphs, Small/Tiny
#   eager      benchmarks/codec_speed.py, bundled codec eager, Small batch 8
#   stream     benchmarks/codec_speed.py, bundled codec, continuous batching: Small, 16,384
#              pages through 2,048 rows (the committed 254.9 pages/s), and Small batched
#              at 512 without refills for comparison
#   context    benchmarks/decode_profile.py, bundled decode step at 112 and 1,400 positions
#   attention  benchmarks/sam_attention_speed.py: SAM's rel-pos attention forms, default
#              kernel (SAM_FORMS, default bias,augment,flex)
#   compile    benchmarks/encoder_speed.py encode under torch.compile, batch 32/128, tiers
#              COMPILE_TIERS (default small,base), SAM attention SAM_ATTENTION (default auto)
#   autotune   the same under torch.compile's max-autotune (no CUDA graphs), Base batch 32
#   reference  benchmarks/reference_speed.py: our encoder vs the public reference's
#   refdecode  benchmarks/reference_decode_speed.py: our decoder vs the Hub remote code's
#              (transformers 4.46.3 from .ref-wheels/, installed apart into .refhf/)
#   train      benchmarks/train_speed.py: the trainer's loader (14 workers) and its step
#              per tier, MoE path and batch scale, timed apart (carry data/synth)
#   traincompile  the same step, dense MoE, eager against the decoder layers compiled on
#              batches padded to 128-step length buckets (no loader; carry data/synth)
#   queue      benchmarks/queue_speed.py: bots queue pages on a local redis-server, one
#              worker reads them with the bundled codec on CUDA, 0 or 8 drawing processes
#              (carry .redis.tar.xz, made by tools/pack_redis.sh / `make device-inputs`)
set -uo pipefail
# A misspelt step would otherwise run nothing, after the setup, on the lent machine's time.
STEPS="profile decode codec eager stream context attention compile autotune reference refdecode"
STEPS="$STEPS train traincompile queue"
for a in "$@"; do
  [[ " $STEPS " == *" $a "* ]] || { echo "unknown step '$a'; steps: $STEPS" >&2; exit 2; }
done
source tools/device_setup.sh
step() { local limit=$1; shift; echo "### $*"; local t=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v '^\s*$' | tail -25; echo "(${PIPESTATUS[0]}, $((SECONDS - t)) s)"; }
want() { [ -z "$ARGS" ] || [[ " $ARGS " == *" $1 "* ]]; }
ARGS="$*"
want profile && step 280 python3 benchmarks/decode_profile.py --out "$OUT/decode_profile_h100.md"
want decode && step 150 python3 -m benchmarks.encoder_speed --skip-encode --cuda-graphs \
  --out "$OUT/encoder_speed_decode_graphs_h100.md"
want codec && step 120 python3 -m benchmarks.codec_speed --device cuda --tiers small,tiny \
  --batches 32,128 --cuda-graphs --out "$OUT/codec_speed_h100_graphs.md"
want stream && step 150 python3 -m benchmarks.codec_speed --device cuda --tiers small \
  --batches 512 --pages 2048 --cuda-graphs --out "$OUT/codec_speed_h200_batched.md"
want stream && step 200 python3 -m benchmarks.codec_speed --device cuda --tiers small \
  --batches 2048 --pages 16384 --cuda-graphs --continuous \
  --out "$OUT/codec_speed_h200_continuous.md"
for ctx in 112 1400; do
  want context && step 90 python3 benchmarks/decode_profile.py --preset bundled --tier small \
    --aligner --modes graphs --batches 512 --no-profile --context $ctx \
    --out "$OUT/decode_context_${ctx}.md"
done
want eager && step 90 python3 -m benchmarks.codec_speed --device cuda --tiers small --batches 8 \
  --out "$OUT/codec_speed_h100_eager.md"
want attention && step 200 python3 -m benchmarks.sam_attention_speed --backends auto \
  --forms "${SAM_FORMS:-bias,augment,flex}" --out "$OUT/sam_attention.md"
want compile && step 240 python3 -m benchmarks.encoder_speed --compile --skip-decode \
  --tiers "${COMPILE_TIERS:-small,base}" --encode-batches 32,128 \
  --sam-attention "${SAM_ATTENTION:-auto}" --out "$OUT/encoder_speed_compile_${SAM_ATTENTION:-auto}.md"
want autotune && step 330 python3 -m benchmarks.encoder_speed --compile max-autotune-no-cudagraphs \
  --skip-decode --tiers base --encode-batches 32 --out "$OUT/encoder_speed_autotune_h100.md"
want reference && step 300 python3 -m benchmarks.reference_speed \
  --out "$OUT/reference_speed_h100.md"
want train && OPTICMEM_SYNTH_DIR="$PWD/data/synth" step 420 python3 -m benchmarks.train_speed \
  --workers 14 --out "$OUT/train_speed_h200.md"
want traincompile && OPTICMEM_SYNTH_DIR="$PWD/data/synth" step 540 \
  python3 -m benchmarks.train_speed --no-loader --moe dense --scales 1 --buckets 0,128 \
  --out "$OUT/train_speed_compile_h200.md"
if want refdecode; then
  # The pinned wheels install into .refhf/, which is ignored, so a warm machine keeps it:
  # with the bundled weights in the tree, all of them exceed what one call may carry, so
  # they can come in two back-to-back calls (only wheels present are installed).
  wheels=()
  for w in .ref-wheels/*.whl; do
    case $w in *-none-any.whl|*-cp312-*) wheels+=("$w");; esac
  done
  [ ${#wheels[@]} -eq 0 ] || python3 -m pip install -q --no-index --no-deps --no-compile \
    --upgrade --target .refhf "${wheels[@]}"
  PYTHONPATH=.refhf:/tmp/site step 540 python3 -m benchmarks.reference_decode_speed \
    --out "$OUT/reference_decode_speed_h200.md"
fi
if want queue && [ -f .redis.tar.xz ]; then
  tar -xJf .redis.tar.xz -C /tmp
  python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/.redis/wheels/*.whl
fi
want queue && step 300 env OPTICMEM_REDIS_SERVER=/tmp/.redis/redis-server \
  python3 -m benchmarks.queue_speed --codec bundled --device cuda --sessions 12 \
  --batches 128 --draw-workers 0,8 --out "$OUT/queue_speed_h200.md"
exit 0
