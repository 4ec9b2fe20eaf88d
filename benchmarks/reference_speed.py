"""Our DeepEncoder against the public reference implementation's, same run, same GPU, same weights.

Issue 3 asks for encode pages/s per tier at batch 1, 8, 32, 128 for the public reference
code (github ``deepseek-ai/DeepSeek-OCR``) beside ours, as a ratio; target ≥ 5× the
reference's per-page encode throughput. This script:

1. loads the reference's vision modules from the scratch folder ``.ref/deepseek-ocr/``
   (``DeepSeek-OCR-master/DeepSeek-OCR-vllm/deepencoder/``: ``sam_vary_sdpa.py``,
   ``clip_sdpa.py``, ``build_linear.py``) — the reference code runs from there only, it
   is never copied into opticmem — and wires them as its ``DeepseekOCRForCausalLM`` does:
   ``sam = sam_model(x)``, ``clip = vision_model(x, sam)``,
   ``projector(cat([clip[:, 1:], sam.flatten(2).permute(0, 2, 1)], -1))``;
2. builds our ``official`` preset with random weights (bf16 on CUDA) and copies *our*
   weights into the reference modules through :data:`opticmem.encoder.official.KEY_MAP`
   (every reference parameter named, every shape checked), so both hold the same weights;
3. checks that both give the same vision tokens on one page per tier: in fp32 (TF32
   off; on the GPU a temporary fp32 copy of both encoders) and, on the GPU, in bf16 as
   timed. Before the check the weights are perturbed so that nothing is trivially zero
   or one (relative-position tables, biases, norms);
4. times encode (pixels → projected token grid, before newline/separator insertion, for
   both) for each tier at each batch: random pixels in [−1, 1], CUDA events, warm-up runs,
   medians; peak memory above the resident weights.

Both run on the same torch (the GPU machine's 2.11; the reference's README pins 2.6.0 +
CUDA 11.8, whose wheels cannot be carried there). The reference's vision path calls
``torch.nn.functional.scaled_dot_product_attention`` in both stages: SAM with its
explicit decomposed relative-position bias as ``attn_mask``; CLIP with
``use_flash_attn=False`` (its ``vit_model_cfg``). Its two modules import ``flash_attn``
but never call it on this path, so where that package is missing (the GPU machine has
none) a stub module is put into ``sys.modules`` at run time; its functions raise if
called. ``easydict`` (imported by ``clip_sdpa.py``) comes from ``.whl/ref/``; where it
is not importable the script pip-installs that wheel into a temporary folder.

Ratios in the table:

* **ours ÷ reference, same batch** — both encoders at the same tier and batch;
* **reference per-page path** — the reference's own inference (its vLLM
  ``_pixel_values_to_embedding`` and the HF ``infer``) encodes one image per call
  (batch 1), so its per-page throughput is the reference at batch 1; **ours best ÷
  reference per-page** divides our best batched throughput by it (what issue 3's
  "≥ 5× its per-page encode throughput" target is read against);
* **ours best ÷ reference best** — the like-for-like ceiling, both at their best batch.

Decode ratio: not here. The GitHub reference has no decoder of its own: its vLLM path runs
vLLM's ``DeepseekForCausalLM`` (vLLM 0.8.5 built for torch 2.6 + CUDA 11.8, which cannot
be installed on the GPU machine), and its HF path runs the Hub model repo's remote code
under ``transformers==4.46.3`` — that one is :mod:`benchmarks.reference_decode_speed`.

Reproduce (from the repo root)::

    tools/fetch_reference.sh   # → .ref/deepseek-ocr/ (pinned revision), .whl/ref/easydict-*.whl
    OMP_NUM_THREADS=1 python -m benchmarks.reference_speed --smoke --out /tmp/ref.md   # CPU
    # GPU machine: carry .ref and .whl (opticmem's pydantic wheels + .whl/ref/easydict):
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \\
        .whl/*.whl .whl/ref/*.whl && export PYTHONPATH=/tmp/site && \\
        python3 -m pip install -q --no-deps --no-build-isolation -e . && \\
        python3 -m benchmarks.reference_speed --out $OUT/reference_speed_h100.md

``--smoke`` builds both encoders at reduced dims (SAM width 64, 2 blocks; CLIP 1 layer;
the channel widths the reference hard-codes) on the CPU in fp32 and times Tiny and Small
at batch 1 and 2, so the script is testable without a GPU.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import gc
import importlib.util
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import publish
from benchmarks.encoder_speed import Timer
from opticmem.encoder.config import ClipConfig, DecoderConfig, ModelConfig, SamConfig, preset
from opticmem.encoder.deepencoder import DeepEncoder
from opticmem.encoder.errors import CheckpointError
from opticmem.encoder.flops import encoder_flops
from opticmem.encoder.model import build_model
from opticmem.encoder.official import to_ours
from opticmem.encoder.sam import ATTENTION_FORMS, SamAttention
from opticmem.render.tiers import Tier

ROOT = Path(__file__).resolve().parents[1]
REF_DIR = ROOT / ".ref" / "deepseek-ocr"
REF_WHEELS = ROOT / ".whl" / "ref"
ENCODER_DIR = Path("DeepSeek-OCR-master") / "DeepSeek-OCR-vllm" / "deepencoder"
DEFAULT_OUT = Path("benchmarks/results/reference_speed.md")
FP32_TOL = 1e-4
"""Largest relative error ‖ours − ref‖ / ‖ref‖ accepted in fp32."""
BF16_TOL = 5e-2
"""Largest relative error accepted in bf16 (36 layers of bf16 rounding, different kernels)."""


class ReferenceMissing(RuntimeError):
    """The reference code or one of its pure-Python dependencies is not available."""


# ---------------------------------------------------------------- loading the reference


def ensure_easydict(wheels: Path = REF_WHEELS) -> None:
    """Make ``easydict`` importable: as installed, else pip-installed from ``wheels``
    into a temporary folder that is removed at exit."""
    if importlib.util.find_spec("easydict") is not None:
        return
    found = sorted(wheels.glob("easydict-*.whl"))
    if not found:
        raise ReferenceMissing(
            f"easydict is not installed and no wheel is in {wheels} (run tools/fetch_reference.sh)"
        )
    target = tempfile.mkdtemp(prefix="refdeps-")
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
         "--no-compile", "--target", target, str(found[-1])],
        check=True,
    )
    sys.path.insert(0, target)
    importlib.invalidate_caches()


@contextlib.contextmanager
def flash_attn_stub() -> Iterator[None]:
    """While the reference modules import: a stand-in ``flash_attn`` if none is installed.

    Its functions raise when called; the reference's vision path never calls them.
    """
    if importlib.util.find_spec("flash_attn") is not None:
        yield
        return

    def unavailable(*_: object, **__: object) -> None:
        raise RuntimeError("flash_attn stub called: the reference took a flash-attention path")

    stub = types.ModuleType("flash_attn")
    stub.flash_attn_qkvpacked_func = unavailable  # type: ignore[attr-defined]
    stub.flash_attn_func = unavailable  # type: ignore[attr-defined]
    sys.modules["flash_attn"] = stub
    try:
        yield
    finally:
        del sys.modules["flash_attn"]


@dataclass(frozen=True)
class Reference:
    """The reference's three vision modules, loaded from the scratch folder."""

    sam: types.ModuleType
    clip: types.ModuleType
    linear: types.ModuleType
    revision: str


def load_reference(ref_dir: Path = REF_DIR, wheels: Path = REF_WHEELS) -> Reference:
    """Import ``sam_vary_sdpa``, ``clip_sdpa`` and ``build_linear`` from ``ref_dir``
    under private module names (nothing of the reference goes on ``sys.path``)."""
    folder = ref_dir / ENCODER_DIR
    if not folder.is_dir():
        raise ReferenceMissing(f"{folder} not found (run tools/fetch_reference.sh)")
    ensure_easydict(wheels)
    modules = {}
    with flash_attn_stub(), warnings.catch_warnings():
        # clip_sdpa.py decorates quick_gelu with torch.jit.script, deprecated in new torch.
        warnings.filterwarnings("ignore", ".*torch.jit.script", DeprecationWarning)
        for stem in ("sam_vary_sdpa", "clip_sdpa", "build_linear"):
            name = f"_dsocr_reference.{stem}"
            spec = importlib.util.spec_from_file_location(name, folder / f"{stem}.py")
            if spec is None or spec.loader is None:
                raise ReferenceMissing(f"cannot load {folder / stem}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # torch.jit.script looks its source up through here
            spec.loader.exec_module(module)
            modules[stem] = module
    revision_file = ref_dir / "REVISION"
    revision = revision_file.read_text().strip() if revision_file.exists() else "unknown"
    return Reference(modules["sam_vary_sdpa"], modules["clip_sdpa"], modules["build_linear"],
                     revision)


class ReferenceEncoder(nn.Module):
    """The reference's vision path: its modules, wired as its ``DeepseekOCRForCausalLM``.

    Attribute names are the reference's (``sam_model``, ``vision_model``, ``projector``), so
    ``"model." + parameter name`` is the official checkpoint key of every parameter.
    """

    def __init__(self, ref: Reference, cfg: ModelConfig) -> None:
        super().__init__()
        from easydict import EasyDict

        s, c = cfg.sam, cfg.clip
        if cfg.name == "official":  # the reference's own builders, its dims hard-coded
            self.sam_model = ref.sam.build_sam_vit_b()
            self.vision_model = ref.clip.build_clip_l()
        else:  # the same classes at other dims (the smoke run)
            self.sam_model = ref.sam.ImageEncoderViT(
                img_size=s.pos_grid * s.patch_size, patch_size=s.patch_size, embed_dim=s.width,
                depth=s.depth, num_heads=s.heads, mlp_ratio=s.mlp_ratio,
                out_chans=s.neck_channels, qkv_bias=True,
                norm_layer=partial(nn.LayerNorm, eps=s.norm_eps), use_rel_pos=True,
                window_size=s.window_size, global_attn_indexes=s.global_attn_indexes,
            )
            clip_cfg = EasyDict({
                **ref.clip.vit_model_cfg, "num_layers": c.depth, "hidden_size": c.width,
                "num_attention_heads": c.heads, "num_heads": c.heads,
                "ffn_hidden_size": c.mlp_dim, "layernorm_epsilon": c.norm_eps,
                "pre_layernorm_epsilon": c.norm_eps, "image_size": c.pos_grid * c.patch_size,
                "patch_size": c.patch_size,
            })
            self.vision_model = ref.clip.VitModel(cfg=clip_cfg)
        self.projector = ref.linear.MlpProjector(
            EasyDict(projector_type="linear", input_dim=cfg.vision_dim, n_embed=cfg.embed_dim)
        )

    def forward(self, pixels: Tensor) -> Tensor:
        """Pixels (B, 3, S, S) → projected tokens (B, g², D)."""
        sam = self.sam_model(pixels)  # (B, 1024, g, g)
        clip = self.vision_model(pixels, sam)  # (B, 1 + g², 1024); pixels only give B
        fused = torch.cat((clip[:, 1:], sam.flatten(2).permute(0, 2, 1)), dim=-1)  # (B, g², 2048)
        return self.projector(fused)  # (B, g², D)


@torch.no_grad()
def copy_weights(ours: DeepEncoder, ref: ReferenceEncoder) -> int:
    """Copy our encoder's parameters into the reference's through the official key map.

    Every reference parameter must map to one of ours with the same shape, and every one
    of ours except the newline/separator embeddings (not part of the grid) must be used;
    :class:`CheckpointError` names the first key that does not fit. Returns the count.
    """
    mine = {f"vision.{name}": p for name, p in ours.named_parameters()}
    copied = 0
    for name, param in ref.named_parameters():
        official = f"model.{name}"
        key = to_ours(official)
        src = mine.pop(key, None)
        if src is None:
            raise CheckpointError(f"no parameter {key!r} in our encoder", key=official)
        if src.shape != param.shape:
            raise CheckpointError(
                f"shape {tuple(param.shape)} in the reference, {tuple(src.shape)} in ours",
                key=official,
            )
        param.copy_(src)
        copied += 1
    left = sorted(set(mine) - {"vision.image_newline", "vision.view_separator"})
    if left:
        raise CheckpointError("our parameter has no reference counterpart", key=left[0])
    return copied


@torch.no_grad()
def perturb(encoder: nn.Module, seed: int = 0) -> None:
    """Give the parameters random initialisation leaves at 0 or 1 random values too, so the
    agreement check exercises relative positions, biases and norm affines."""
    for i, (name, p) in enumerate(encoder.named_parameters()):
        if "rel_pos" in name:
            mean, std = 0.0, 0.2
        elif name.endswith("bias"):
            mean, std = 0.0, 0.02
        elif "norm" in name:  # LayerNorm / LayerNorm2d weights (their biases: above)
            mean, std = 1.0, 0.1
        else:  # weight matrices and embeddings: already random
            continue
        gen = torch.Generator(device=p.device).manual_seed(seed * 100_003 + i)
        noise = torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32)
        p.copy_(mean + std * noise)


# ---------------------------------------------------------------- agreement


@dataclass
class Agreement:
    tier: str
    dtype: str
    max_abs: float
    rel: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.rel <= self.tol


def pages(tier: Tier, batch: int, device: torch.device, dtype: torch.dtype, seed: int) -> Tensor:
    """Random pixels in [−1, 1], (batch, 3, S, S)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(batch, 3, tier.pixels, tier.pixels, generator=gen, device=device)
    return (x * 2 - 1).to(dtype)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for matmuls and convolutions while fp32 outputs are compared."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def compare(ours: DeepEncoder, ref: ReferenceEncoder, tier: Tier, device: torch.device,
            dtype: torch.dtype, tol: float) -> Agreement:
    x = pages(tier, 1, device, dtype, seed=1234)
    with torch.no_grad():
        a = ours.encode_grid(x).flatten(1, 2).float()  # (1, g², D)
        b = ref(x).float()  # (1, g², D)
    diff = a - b
    return Agreement(tier.value, str(dtype).removeprefix("torch."), float(diff.abs().max()),
                     float(diff.norm() / b.norm()), tol)


# ---------------------------------------------------------------- timing


@dataclass
class Point:
    ms: float
    pages_s: float
    mfu: float | None
    extra_mib: float | None
    note: str = ""


def time_point(
    fn: Callable[[Tensor], object],
    pixels: Tensor,
    timer: Timer,
    warmup: int,
    repeats: int,
    max_seconds: float,
    flops: float,
    peak_flops: float,
) -> Point:
    """Median time of ``fn(pixels)`` after ``warmup`` runs (fewer when one run is slow);
    repeats are cut so the timed runs of one point take about ``max_seconds`` (1 at least)."""
    device = pixels.device
    batch = pixels.shape[0]
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    times: list[float] = []
    try:
        first = timer(lambda: fn(pixels))
        for _ in range(warmup - 1 if first < max_seconds / 2 else 0):
            first = timer(lambda: fn(pixels))
        n = max(1, min(repeats, int(max_seconds / max(first, 1e-9))))
        times = [timer(lambda: fn(pixels)) for _ in range(n)]
    except torch.cuda.OutOfMemoryError:
        pass  # handled below, once the exception (and the tensors its frames hold) is gone
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
    if not times:
        extra = (torch.cuda.max_memory_allocated() - resident) / 2**20 if cuda else None
        return Point(float("nan"), float("nan"), None, extra, "out of memory")
    med = statistics.median(times)
    extra = (torch.cuda.max_memory_allocated() - resident) / 2**20 if cuda else None
    mfu = flops * batch / med / peak_flops if peak_flops else None
    return Point(med * 1e3, batch / med, mfu, extra, f"{len(times)} runs")


# ---------------------------------------------------------------- report


def fmt(value: float | None, spec: str, missing: str = "–") -> str:
    if value is None or value != value:  # None or NaN
        return missing
    return format(value, spec)


def pct(mfu: float | None) -> str:
    return "–" if mfu is None or mfu != mfu else f"{100 * mfu:.1f}%"


def ratio(a: float, b: float) -> str:
    return "–" if not (a == a and b == b and b > 0) else f"{a / b:.2f}×"


def report(
    header: str,
    checks: list[Agreement],
    rows: list[tuple[Tier, int, Point, Point]],
) -> str:
    lines = [header, "", "### Agreement (same weights, one page of random pixels per tier)", "",
             "| tier | dtype | max abs Δ | ‖Δ‖ / ‖ref‖ | tolerance | agrees |",
             "|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c.tier} | {c.dtype} | {c.max_abs:.3g} | {c.rel:.3g} | "
                     f"{c.tol:g} | {'yes' if c.ok else '**NO**'} |")
    lines += [
        "", "### Encode, per tier and batch", "",
        "Pixels → projected token grid. ms = median per batched call; extra MiB = peak GPU "
        "memory above the resident weights of both encoders; **ours ÷ ref** = our pages/s "
        "over the reference's at the same tier and batch.", "",
        "| tier | batch | ours ms | ours pages/s | ours MFU | ours extra MiB | ref ms "
        "| ref pages/s | ref MFU | ref extra MiB | ours ÷ ref | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tier, batch, o, r in rows:
        note = "; ".join(n for n in (f"ours: {o.note}" if o.note else "",
                                     f"ref: {r.note}" if r.note else "") if n)
        lines.append(
            f"| {tier.value} | {batch} | {fmt(o.ms, '.2f')} | {fmt(o.pages_s, ',.1f')} | "
            f"{pct(o.mfu)} | "
            f"{fmt(o.extra_mib, ',.0f')} | {fmt(r.ms, '.2f')} | {fmt(r.pages_s, ',.1f')} | "
            f"{pct(r.mfu)} | "
            f"{fmt(r.extra_mib, ',.0f')} | {ratio(o.pages_s, r.pages_s)} | {note} |"
        )
    lines += [
        "", "### Per tier: against the reference's per-page path (issue 3 target: ≥ 5×)", "",
        "**ref per-page path** = the reference at batch 1 (its vLLM and HF inference encode "
        "one image per call); **ours best** = our highest pages/s over the batches; "
        "**ref best** = the reference's highest pages/s over the batches (like for like).", "",
        "| tier | ref per-page path pages/s | ours best pages/s (batch) "
        "| ours best ÷ ref per-page | ≥ 5× | ref best pages/s (batch) | ours best ÷ ref best |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier in dict.fromkeys(t for t, *_ in rows):
        mine = [(b, o) for t, b, o, _ in rows if t == tier and o.pages_s == o.pages_s]
        theirs = [(b, r) for t, b, _, r in rows if t == tier and r.pages_s == r.pages_s]
        per_page = next((r.pages_s for b, r in theirs if b == 1), float("nan"))
        ob, obest = max(mine, key=lambda x: x[1].pages_s, default=(0, None))
        rb, rbest = max(theirs, key=lambda x: x[1].pages_s, default=(0, None))
        o_ps = obest.pages_s if obest else float("nan")
        r_ps = rbest.pages_s if rbest else float("nan")
        met = "–" if per_page != per_page or o_ps != o_ps else (
            "yes" if o_ps >= 5 * per_page else "no")
        lines.append(
            f"| {tier.value} | {fmt(per_page, ',.1f')} | {fmt(o_ps, ',.1f')} ({ob}) | "
            f"{ratio(o_ps, per_page)} | {met} | {fmt(r_ps, ',.1f')} ({rb}) | {ratio(o_ps, r_ps)} |"
        )
    lines += [
        "", "Decode tokens/s ratio: not in this table — the GitHub reference has no decoder "
        "of its own; `benchmarks/reference_decode_speed.py` times the Hub repo's remote-code "
        "decoder (transformers 4.46.3) beside ours.", "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def smoke_config() -> ModelConfig:
    """Reduced dims the reference's classes accept: its compressor (256→512→1024) and the
    fusion width are hard-coded, so only SAM's width/depth and CLIP's depth shrink."""
    official = preset("official")
    return replace(
        official,
        name="reference-smoke",
        sam=replace(SamConfig(), width=64, depth=2, heads=2, global_attn_indexes=(1,)),
        clip=replace(ClipConfig(keep_patch_embedding=True), depth=1),
        decoder=DecoderConfig(vocab_size=256, hidden_size=64, layers=1, heads=2, head_dim=32,
                              dense_intermediate=128, routed_experts=0, image_token_id=3),
    )


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--ref-dir", type=Path, default=REF_DIR)
    ap.add_argument("--ref-wheels", type=Path, default=REF_WHEELS)
    ap.add_argument("--tiers", default="tiny,small,base,large")
    ap.add_argument("--batches", default="1,8,32,128")
    ap.add_argument("--skip", default="",
                    help="tier:batch points not to time, e.g. large:128 (comma-separated)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per point (at most)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-point-seconds", type=float, default=4.0,
                    help="cut repeats (to 1 at least) so one point's timed runs take about this")
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 dense peak")
    ap.add_argument("--sam-attention", choices=ATTENTION_FORMS,
                    default="auto",
                    help="our SAM's rel-pos attention form (see opticmem.encoder.sam)")
    ap.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                    help="time our encoder through torch.compile(encode_grid, mode=MODE), as "
                         "OCRCodec.compile_encoder runs it (compiled before each point's timing)")
    ap.add_argument("--smoke", action="store_true",
                    help="reduced dims on the CPU in fp32 (tests the script)")
    args = ap.parse_args(argv)

    if args.smoke:
        device = torch.device("cpu")
        args.tiers, args.batches, args.repeats, args.warmup = "tiny,small", "1,2", 2, 1
        cfg = smoke_config()
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        cfg = preset("official")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tiers = [Tier.parse(t) for t in args.tiers.split(",") if t]
    batches = parse_ints(args.batches)
    skip = {tuple(p.split(":")) for p in args.skip.split(",") if p}
    SamAttention.impl = args.sam_attention

    ref_code = load_reference(args.ref_dir, args.ref_wheels)
    model = build_model(cfg, device=device, dtype=dtype, seed=0)
    perturb(model.vision)
    with torch.device(device):
        ref = ReferenceEncoder(ref_code, cfg).eval()  # fp32, the reference's own init
    n_copied = copy_weights(model.vision, ref)
    print(f"copied {n_copied} parameter tensors into the reference", flush=True)

    checks: list[Agreement] = []
    with exact_fp32():
        ours32 = model.vision if dtype == torch.float32 else copy.deepcopy(model.vision).float()
        for tier in tiers:
            checks.append(compare(ours32, ref, tier, device, torch.float32, FP32_TOL))
            print(checks[-1], flush=True)
        del ours32
    if dtype != torch.float32:
        ref.to(dtype)  # exact: the values came from bf16
        for tier in tiers:
            checks.append(compare(model.vision, ref, tier, device, dtype, BF16_TOL))
            print(checks[-1], flush=True)

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        gpu = torch.cuda.get_device_name(device)
    else:
        gpu = platform.processor() or platform.machine()
    peak = args.peak_tflops * 1e12 if device.type == "cuda" else 0.0
    params = sum(p.numel() for p in ref.parameters())
    header = (
        f"## Encode speed: opticmem vs the reference DeepEncoder — `{cfg.name}` dims\n\n"
        f"device: {gpu}; dtype {str(dtype).removeprefix('torch.')}; torch {torch.__version__}; "
        f"reference: github deepseek-ai/DeepSeek-OCR @ {ref_code.revision[:12]} "
        f"(`DeepSeek-OCR-vllm/deepencoder`, {params:,} parameters, run under `torch.no_grad`, "
        f"SDPA with its explicit rel-pos bias mask in SAM); ours: `DeepEncoder.encode_grid` "
        f"under `torch.inference_mode`"
        + (f" through `torch.compile` (mode {args.compile})" if args.compile else "")
        + f", SAM attention `{args.sam_attention}`. Same weights "
        f"(ours, copied through the official key map: {n_copied} tensors). MFU from "
        f"`opticmem.encoder.flops` vs {args.peak_tflops:g} TFLOP/s"
        + ("" if device.type == "cuda" else " (not computed on CPU)")
    )
    print(header, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(header, checks, []))

    timer = Timer(device)

    encode = (
        torch.compile(model.encode_grid, dynamic=False, mode=args.compile)
        if args.compile
        else model.encode_grid
    )

    def run_ours(x: Tensor) -> None:
        with torch.inference_mode():
            encode(x)

    def run_ref(x: Tensor) -> None:
        with torch.no_grad():
            ref(x)

    rows: list[tuple[Tier, int, Point, Point]] = []
    for tier in tiers:
        flops = float(encoder_flops(cfg, tier.pixels))
        for batch in batches:
            if (tier.value, str(batch)) in skip:
                continue
            x = pages(tier, batch, device, dtype, seed=batch)
            timing: dict[str, Any] = dict(timer=timer, warmup=args.warmup, repeats=args.repeats,
                                          max_seconds=args.max_point_seconds, flops=flops,
                                          peak_flops=peak)
            if args.compile:
                run_ours(x)  # compiles this shape outside the timing
            o = time_point(run_ours, x, **timing)
            r = time_point(run_ref, x, **timing)
            del x
            rows.append((tier, batch, o, r))
            print(f"{tier.value} b{batch}: ours {o.pages_s:,.1f} pages/s ({o.note}), "
                  f"ref {r.pages_s:,.1f} pages/s ({r.note}), "
                  f"ratio {ratio(o.pages_s, r.pages_s)}", flush=True)
            args.out.write_text(report(header, checks, rows))  # partial results survive a kill

    text = report(header, checks, rows)
    publish(text, args.out)
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"DISAGREEMENT: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
