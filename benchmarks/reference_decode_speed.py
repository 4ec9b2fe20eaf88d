"""Our decoder against the reference decoder's own inference path: same run, same weights.

Issue 3 asks for decode tokens/s beside the public reference implementation's, as a ratio.
The reference decoder is the Hub model repo's remote code (``deepseek-ai/DeepSeek-OCR``:
``DeepseekOCRForCausalLM`` extends ``modeling_deepseekv2.DeepseekV2ForCausalLM``, pinned to
transformers 4.46.3), whose ``infer()`` decodes one page per call with transformers'
``generate`` (greedy, ``use_cache=True``, no-repeat n-gram 20 — 35 in its eval mode — and
EOS 1). After the prefill a decoding step is the language model alone, so this script
times ``DeepseekV2ForCausalLM.generate`` on the prompt a page makes, and ours beside it.

1. It imports the remote code from ``.ref/deepseek-ocr-hub/deepseek_ocr_hub/`` (pinned and
   SHA-256-checked by ``tools/fetch_reference.sh``; it runs from there only, it is never
   copied into opticmem) under transformers 4.46.x, which it checks;
2. builds our decoder at ``--preset`` (``official``: the Hub config's language model,
   which it checks field by field against ``config.json``) with random weights and copies
   them into the reference through :func:`opticmem.encoder.official.to_official`, every
   key and shape strictly, so both hold the same weights;
3. checks that both choose the same greedy tokens from the same prompt (fp32 on the CPU;
   on the GPU, the first step's logits within bf16 tolerance);
4. times ``--tokens`` new tokens per row at each batch: the prompt is ``[bos]`` and
   ``slots`` random token ids (a page's length at ``--tier``; our side feeds their
   embeddings as its image slots, so both see the same inputs), EOS ignored on both sides
   (``min_new_tokens``; ours stops on no id). The reference uses its attention as loaded
   (eager: its remote code refuses SDPA, and flash-attn is not on the GPU machine); ours
   runs with CUDA graphs on a GPU. No-repeat guards: ours 30/90 at every batch; the
   reference's at batch 1 (``--ref-ngram``, 20 as in ``infer()``), off for larger batches
   — transformers' guard rescans each row's whole history in Python every step, so with
   it the reference at batch 32 would time that scan.

Ratios: **ours ÷ reference, same batch**, and **ours best ÷ reference per-page** — the
reference's own path decodes one page per call, so its per-page throughput is its batch-1
figure.

Reproduce (from the repo root)::

    tools/fetch_reference.sh   # → .ref/deepseek-ocr-hub/, .ref-wheels/ (pinned wheels)
    python -m pip install -q --no-index --no-deps --target /tmp/refhf .ref-wheels/*.whl
    PYTHONPATH=/tmp/refhf python -m benchmarks.reference_decode_speed --smoke --out /tmp/d.md
    # GPU machine: tools/device_bench.sh refdecode installs the wheels it finds in
    # .ref-wheels/ into .refhf/ and runs this. The tree with the bundled weights, .whl, .ref
    # and those wheels exceeds one call's carry, so carry them in two back-to-back calls on
    # a warm machine (it keeps the ignored .refhf/): first the transformers, huggingface_hub
    # and einops wheels, with `python3 -m pip install -q --no-index --no-deps --upgrade
    # --target .refhf .ref-wheels/*.whl`; then .whl, .ref and the cp312 tokenizers wheel,
    # with `tools/device_bench.sh refdecode`.

``--smoke`` runs the ``test`` preset's decoder in fp32 on the CPU with a few tokens: it
proves the wiring, not the speed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from benchmarks import publish
from benchmarks.encoder_speed import Timer, parse_ints, peak_mib, reset_memory
from opticmem.encoder.config import DecoderConfig, preset
from opticmem.encoder.errors import CheckpointError
from opticmem.encoder.generate import GenerationConfig, Prompt, generate
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.official import to_official
from opticmem.render.tiers import Tier

HUB_DIR = Path(".ref/deepseek-ocr-hub")
PACKAGE = "deepseek_ocr_hub"
TRANSFORMERS = "4.46."
DEFAULT_OUT = Path("benchmarks/results/reference_decode_speed.md")
HUB_FIELDS = {  # the Hub config's language_config field → ours
    "vocab_size": "vocab_size", "hidden_size": "hidden_size",
    "num_hidden_layers": "layers", "num_attention_heads": "heads",
    "num_key_value_heads": "heads", "intermediate_size": "dense_intermediate",
    "moe_intermediate_size": "moe_intermediate", "n_routed_experts": "routed_experts",
    "num_experts_per_tok": "experts_per_token", "n_shared_experts": "shared_experts",
    "first_k_dense_replace": "first_k_dense", "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id", "max_position_embeddings": "max_positions",
}


def load_reference(root: Path = HUB_DIR) -> tuple[ModuleType, dict[str, Any]]:
    """The remote code's ``modeling_deepseekv2`` module and its Hub ``config.json``."""
    import transformers

    if not transformers.__version__.startswith(TRANSFORMERS):
        raise RuntimeError(
            f"the reference decoder needs transformers {TRANSFORMERS}x (its pin is 4.46.3); "
            f"this interpreter has {transformers.__version__}: install .ref-wheels/ into a "
            "folder and put it first on PYTHONPATH (see this module's docstring)")
    if not (root / PACKAGE / "modeling_deepseekv2.py").is_file():
        raise FileNotFoundError(f"no reference decoder code in {root / PACKAGE}: run "
                                "tools/fetch_reference.sh")
    sys.path.insert(0, str(root.resolve()))
    module = importlib.import_module(f"{PACKAGE}.modeling_deepseekv2")
    config = json.loads((root / PACKAGE / "config.json").read_text())
    return module, config


def reference_config(module: ModuleType, hub: dict[str, Any], d: DecoderConfig) -> Any:
    """The Hub language config with our decoder's dims (the same values at ``official``)."""
    fields = dict(hub["language_config"])
    fields.update({theirs: getattr(d, ours) for theirs, ours in HUB_FIELDS.items()})
    fields.update(rms_norm_eps=d.norm_eps, rope_theta=d.rope_theta,
                  routed_scaling_factor=d.routed_scaling_factor, norm_topk_prob=d.norm_topk_prob,
                  pad_token_id=d.pad_token_id, use_cache=True)
    config = module.DeepseekV2Config(**fields)
    config._attn_implementation = "eager"
    return config


def official_mismatches(hub: dict[str, Any], d: DecoderConfig) -> list[str]:
    """Where our decoder's dims differ from the Hub config's language model."""
    lang = hub["language_config"]
    return [f"{theirs}: Hub {lang[theirs]} vs ours {getattr(d, ours)}"
            for theirs, ours in HUB_FIELDS.items() if lang[theirs] != getattr(d, ours)]


def reference_decoder(module: ModuleType, hub: dict[str, Any], ours: OCRModel) -> Any:
    """``DeepseekV2ForCausalLM`` holding our decoder's weights (strict names and shapes)."""
    param = next(ours.parameters())
    ref = module.DeepseekV2ForCausalLM(reference_config(module, hub, ours.cfg.decoder))
    state = {to_official(f"decoder.{k}"): v for k, v in ours.decoder.state_dict().items()}
    expected = ref.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"reference decoder keys differ: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    for k, v in state.items():
        if tuple(expected[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{k}: reference shape {tuple(expected[k].shape)}, "
                                  f"ours {tuple(v.shape)}")
    ref.load_state_dict(state, strict=True)
    return ref.to(device=param.device, dtype=param.dtype).eval()


@dataclass
class Point:
    who: str
    batch: int
    seconds: float
    tokens_s: float
    peak_mib: float | None
    note: str = ""


def prompt_ids(d: DecoderConfig, batch: int, slots: int, seed: int) -> torch.Tensor:
    """(batch, 1 + slots): ``[bos]`` and random ids, none of them a special token."""
    g = torch.Generator().manual_seed(seed)
    specials = torch.tensor([d.bos_token_id, d.eos_token_id, d.pad_token_id, d.image_token_id])
    plain = next(i for i in range(d.vocab_size) if i not in specials)
    body = torch.randint(0, d.vocab_size, (batch, slots), generator=g)
    body[torch.isin(body, specials)] = plain
    return torch.cat([torch.full((batch, 1), d.bos_token_id), body], dim=1)


def our_prompts(model: OCRModel, ids: torch.Tensor) -> list[Prompt]:
    """The same inputs for our engine: the ids after ``[bos]`` as image-slot embeddings."""
    param = next(model.parameters())
    with torch.inference_mode():
        embeds = model.decoder.embed_tokens(ids[:, 1:].to(param.device))
    return [Prompt(slots=e) for e in embeds]


def ref_generate(ref: Any, ids: torch.Tensor, tokens: int, ngram: int) -> torch.Tensor:
    """The reference's ``generate`` as its ``infer()`` calls it, EOS ignored: (B, tokens)."""
    ids = ids.to(next(ref.parameters()).device)
    with torch.inference_mode():
        out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                           min_new_tokens=tokens, do_sample=False, use_cache=True,
                           no_repeat_ngram_size=ngram, eos_token_id=ref.config.eos_token_id,
                           pad_token_id=ref.config.pad_token_id)
    return out[:, ids.shape[1]:]


def check_agreement(model: OCRModel, ref: Any, d: DecoderConfig, slots: int,
                    tokens: int) -> str:
    """Both engines' greedy tokens (fp32) or first logits (bf16) from one prompt."""
    ids = prompt_ids(d, 2, slots, seed=7)
    cfg = GenerationConfig(max_new_tokens=tokens, no_repeat_ngram_size=0, stop_token_ids=(-1,))
    ours = [g.token_ids for g in generate(model, our_prompts(model, ids), cfg)]
    theirs = ref_generate(ref, ids, tokens, 0).tolist()
    with torch.inference_mode():
        device = next(ref.parameters()).device
        ref_logits = ref(ids.to(device)).logits[:, -1].float()
        hidden = model.decoder(model.embed_inputs(
            torch.tensor([[d.bos_token_id] + [d.image_token_id] * slots] * 2, device=device),
            torch.cat([p.slots for p in our_prompts(model, ids)])), None)
        our_logits = model.decoder.logits(hidden[:, -1]).float()
    scale = float(ref_logits.abs().max())
    diff = float((ref_logits - our_logits).abs().max())
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    fp32 = next(model.parameters()).dtype == torch.float32
    if fp32 and (ours != theirs or diff > 1e-4 * max(scale, 1.0)):
        raise AssertionError(f"reference and ours disagree: {same}/2 rows, logits Δ {diff:.2e}")
    if not fp32 and diff > 0.05 * max(scale, 1.0):
        raise AssertionError(f"first-step logits differ by {diff:.3f} (scale {scale:.2f})")
    return (f"same weights: first-step logits max |Δ| {diff:.2e} (scale {scale:.1f}); "
            f"{same}/2 rows chose the same {tokens} greedy tokens")


def time_points(who: str, run: Callable[[int, int], object], batches: list[int], tokens: int,
                repeats: int, warmup_tokens: int, device: torch.device,
                note: Callable[[int], str], done: Callable[[Point], None]) -> None:
    """Time ``run(batch, tokens)`` at each batch; ``done`` gets each point as it is measured."""
    timer = Timer(device)
    for batch in batches:
        reset_memory(device)
        try:
            run(batch, warmup_tokens)  # warm-up (and the CUDA graphs' capture for ours)
            seconds = statistics.median(timer(partial(run, batch, tokens))
                                        for _ in range(repeats))
        except torch.cuda.OutOfMemoryError:
            done(Point(who, batch, float("nan"), float("nan"), peak_mib(device),
                       "out of memory"))
            continue
        p = Point(who, batch, seconds, batch * tokens / seconds, peak_mib(device), note(batch))
        print(f"{who} batch {batch}: {p.tokens_s:,.1f} tokens/s ({p.seconds:.2f} s)", flush=True)
        done(p)


def render(points: list[Point], header: str) -> str:
    ref = {p.batch: p for p in points if p.who == "reference"}
    ours = {p.batch: p for p in points if p.who == "ours"}
    lines = [header, "", "| decoder | batch | s per call | tokens/s | peak MiB | note |",
             "|---|---|---|---|---|---|"]
    for p in points:
        mem = f"{p.peak_mib:,.0f}" if p.peak_mib is not None else "–"
        lines.append(f"| {p.who} | {p.batch} | {p.seconds:.2f} | {p.tokens_s:,.1f} | {mem} | "
                     f"{p.note} |")
    lines += ["", "| batch | ours ÷ reference, same batch |", "|---|---|"]
    lines += [f"| {b} | {ours[b].tokens_s / ref[b].tokens_s:.1f}× |" for b in sorted(ref)
              if b in ours]
    if 1 in ref and ours:
        best = max(ours.values(), key=lambda p: p.tokens_s)
        lines += ["", f"**Ours best ÷ reference per-page** (its `infer()` decodes one page per "
                      f"call, batch 1): {best.tokens_s / ref[1].tokens_s:.1f}× (ours at batch "
                      f"{best.batch})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--preset", default="official")
    ap.add_argument("--tier", default="base", help="page tier: the prompt's length")
    ap.add_argument("--tokens", type=int, default=1000, help="new tokens per row")
    ap.add_argument("--batches", default="1,32,128", help="our batches")
    ap.add_argument("--ref-batches", default="1,32", help="the reference's batches")
    ap.add_argument("--ref-ngram", type=int, default=20,
                    help="the reference's no-repeat n-gram size at batch 1 (its infer(): 20)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per point, ours")
    ap.add_argument("--ref-repeats", type=int, default=1,
                    help="timed runs per point, the reference (each is --tokens steps)")
    ap.add_argument("--smoke", action="store_true", help="tiny preset, fp32, CPU, few tokens")
    args = ap.parse_args(argv)
    if args.smoke:
        args.preset, args.tier, args.tokens = "test", "tiny", 6
        args.batches = args.ref_batches = "1,2"
        args.repeats = args.ref_repeats = 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    module, hub = load_reference()
    model = build_model(preset(args.preset), device=device, dtype=dtype, seed=0).eval()
    d = model.cfg.decoder
    if args.preset == "official" and (bad := official_mismatches(hub, d)):
        raise AssertionError(f"official preset differs from the Hub config: {bad}")
    ref = reference_decoder(module, hub, model)
    slots = Tier.parse(args.tier).slots
    agreement = check_agreement(model, ref, d, slots, min(args.tokens, 8))
    print(agreement, flush=True)

    graphs = device.type == "cuda"
    ours_cfg = GenerationConfig(max_new_tokens=args.tokens, no_repeat_ngram_size=30,
                                no_repeat_window=90, stop_token_ids=(-1,), cuda_graphs=graphs)

    def ours(batch: int, tokens: int) -> object:
        cfg = replace(ours_cfg, max_new_tokens=tokens)
        return generate(model, our_prompts(model, prompt_ids(d, batch, slots, batch)), cfg)

    def theirs(batch: int, tokens: int) -> object:
        ngram = args.ref_ngram if batch == 1 else 0
        return ref_generate(ref, prompt_ids(d, batch, slots, batch), tokens, ngram)

    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    header = (f"# Decode: ours against the reference decoder's own path\n\n"
              f"Device: {name}; torch {torch.__version__}; preset {args.preset}, "
              f"{str(dtype).removeprefix('torch.')}, random weights shared by both; prompt "
              f"1 + {slots} tokens ({args.tier} page); {args.tokens} new tokens per row, EOS "
              f"ignored; medians of {args.repeats} runs (reference: {args.ref_repeats}). "
              f"{agreement}.")
    points: list[Point] = []

    def done(point: Point) -> None:
        # Written after every point, so a run stopped by a time limit keeps what it measured.
        points.append(point)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(render(points, header), encoding="utf-8")

    time_points("reference", theirs, parse_ints(args.ref_batches), args.tokens,
                args.ref_repeats, min(args.tokens, 8), device,
                lambda b: (f"no-repeat {args.ref_ngram}" if b == 1 else "no-repeat off")
                + "; eager attention, DynamicCache", done)
    # Ours warms up at full length: that run captures the CUDA graphs the timed runs replay.
    time_points("ours", ours, parse_ints(args.batches), args.tokens, args.repeats, args.tokens,
                device, lambda b: "no-repeat 30/90" + ("; CUDA graphs" if graphs else ""), done)
    publish(render(points, header), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
