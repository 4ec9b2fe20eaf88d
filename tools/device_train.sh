#!/usr/bin/env bash
# One training call on the lent GPU machine (see README, "Training the bundled codec";
# carry .whl, data/synth/meta.json and data/synth/train.json.gz, all made by
# `make device-inputs`, and data/synth/eval.json.gz unless EVAL=0: the tree's bundled
# weights leave no room in one call's 64 MiB for all of data/synth).
# Usage: [TOTAL_MINUTES=N] [PHASE_START=M PEAK_LR=X] [PSEUDO=R] [SYMBOLS=R] [EVAL=0] \
#        [TIERS=large=0.1,base=0.1,small=0.5,tiny=0.3] [BATCH_SCALE=2] [MOE=dense] \
#        [BUCKET=128 [COMPILE_DECODER=1 MOE=dense]] [GROW=sam=6,clip=4,decoder=6,reader=4] \
#        [QUANTIZE=int8] \
#        tools/device_train.sh MINUTES [INIT_DIR]
#   Resumes from .train/state when this machine holds it (back-to-back calls), else from
#   INIT_DIR (exported weights) when given, deepened first by GROW (encoder.grow: the
#   same function, new blocks to train), else from scratch. Writes the exported weights
#   (bf16, or int8 matrices with QUANTIZE=int8), progress and a quick held-out evaluation to $OUT.
set -euo pipefail
MINUTES=${1:-8}
INIT=${2:-}
if [ ! -f data/synth/meta.json ]; then
  echo "no data/synth export in this tree: run 'make device-inputs' on the development" \
       "machine and carry data/synth" >&2
  exit 2
fi
source tools/device_setup.sh
export OPTICMEM_SYNTH_DIR="$PWD/data/synth"
python3 - "$MINUTES" "$INIT" <<'PY'
import json, logging, os, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
logging.getLogger("opticmem.encoder.checkpoint").setLevel(logging.WARNING)
from opticmem.encoder.train import TrainConfig, parse_tier_mix, scaled_batches, train
from opticmem.encoder.bundled import export_bundled
minutes, init = float(sys.argv[1]), sys.argv[2] or None
# Environment overrides of TrainConfig's schedule and data; unset ones keep its defaults.
env = {"TOTAL_MINUTES": "total_minutes", "PHASE_START": "phase_start", "PEAK_LR": "peak_lr",
       "PSEUDO": "pseudo_word_rate", "SYMBOLS": "pseudo_symbol_rate"}
overrides: dict = {field: float(os.environ[var]) for var, field in env.items() if var in os.environ}
if os.environ.get("TIERS"):  # the share of pages drawn at each tier, "large=0.1,base=0.1,..."
    overrides["tier_weights"] = parse_tier_mix(os.environ["TIERS"])
if os.environ.get("BATCH_SCALE"):  # pages per step at every tier, times this
    overrides["batch_pages"] = scaled_batches(float(os.environ["BATCH_SCALE"]))
if os.environ.get("MOE"):  # how MoE layers run their experts: grouped or dense (no GPU waits)
    overrides["moe_dispatch"] = os.environ["MOE"]
if os.environ.get("BUCKET"):  # pad decoder lengths to multiples of this: a few fixed shapes
    overrides["length_bucket"] = int(os.environ["BUCKET"])
if os.environ.get("COMPILE_DECODER", "0") != "0":  # compile the decoder layers (BUCKET, MOE=dense)
    overrides["compile_decoder"] = True
if os.environ.get("GROW") and init and not Path(".train/state/progress.json").exists():
    import shutil
    import torch
    from opticmem.encoder.checkpoint import load_checkpoint, save_checkpoint
    from opticmem.encoder.grow import grow
    stage = {"sam": "sam_depth", "clip": "clip_depth", "decoder": "decoder_layers",
             "reader": "reader_points"}
    depths = {stage[k]: int(v) for k, v in (i.split("=") for i in os.environ["GROW"].split(","))}
    big = grow(load_checkpoint(init, device="cpu", dtype=torch.float32), **depths)
    save_checkpoint(big, ".train/grown")
    for record in ("progress.json", "training_log.json"):  # steps and minutes so far
        if (Path(init) / record).is_file():
            shutil.copyfile(Path(init) / record, Path(".train/grown") / record)
    print("grown to", big.num_parameters(), "parameters:", depths)
    init = ".train/grown"
cfg = TrainConfig(out_dir=Path(".train"), minutes=minutes, workers=14,
                  init_from=Path(init) if init else None, **overrides)
progress = train(cfg)
out = Path(os.environ["OUT"])
# QUANTIZE=int8: weight matrices as int8 (half the bytes; see export_bundled)
export_bundled(Path(".train/state/model"), out / "weights",
               quantize="int8" if os.environ.get("QUANTIZE") == "int8" else None)
(out / "weights" / "tokenizer.json").unlink()
(out / "weights" / "progress.json").write_text(json.dumps(progress, indent=1))
print("trained", progress["step"], "steps,", progress["pages"], "pages,",
      round(progress["minutes"], 1), "minutes in", progress["runs"], "runs")
PY
[ "${EVAL:-1}" = 0 ] && exit 0
python3 - <<'PY'
import os, time
from pathlib import Path
import torch
from opticmem.encoder import synth
from opticmem.encoder.bundled import load_bundled_codec
from opticmem.encoder.tokenizer import load_tokenizer
from opticmem.evaluation import evaluate, markdown_table, summarise, write_results
from opticmem.render import RenderSettings
out = Path(os.environ["OUT"])
import shutil; shutil.copyfile("encoder/weights/tokenizer.json", out / "weights/tokenizer.json")
codec = load_bundled_codec(out / "weights", device="cuda")
(out / "weights/tokenizer.json").unlink()
tok = load_tokenizer()
stream = synth.page_stream(99, "eval", RenderSettings())
pages = [next(stream) for _ in range(16)]
t = time.time()
scores = evaluate(codec, pages, count_tokens=lambda s: len(tok.encode(s, add_special_tokens=False).ids), batch_size=16)
print(f"eval {len(scores)} page-tiers in {time.time()-t:.0f}s")
print(markdown_table(summarise(scores)))
import json, dataclasses
(out / "eval.json").write_text(json.dumps([dataclasses.asdict(s) for s in scores]))
rec = codec.decode(codec.encode([__import__("opticmem.render", fromlist=["render_page"]).render_page(pages[0], "small").convert("RGB")], "small"))[0]
print("--- reference (small):\n" + pages[0].transcript[:600] + "\n--- read back:\n" + rec.text[:600])
PY
