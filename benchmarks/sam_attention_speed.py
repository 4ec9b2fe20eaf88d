"""SAM attention with relative positions: which SDPA form and kernel is fastest (GPU, bf16).

SAM's attention adds a decomposed relative-position bias to every score. The reference
materialises it as an additive mask; :func:`opticmem.encoder.sam.augmented_attention`
folds it into extra query/key head dims instead. This times, at the official preset's
shapes (width 768, 12 heads of 64) for a Base or Large page batch:

* ``bias``: the reference's additive ``(T, T)`` mask;
* ``augment``: folded bias, values at their own width (64);
* ``augment-vpad``: folded bias, values zero-padded to the query/key width (the only
  form the flash kernel accepts);
* ``flex``: :func:`flex_rel_pos_attention` under ``torch.compile``, the bias added to each
  score inside FlexAttention's generated kernel: no mask, no extra head dims, exactly the
  model's FLOPs (no SDPA backend; its row says ``compiled``). A candidate only: on the
  H200 it ran 14× slower than ``bias`` in the global blocks
  (``benchmarks/results/sam_attention_flex_h200.md``), so the model does not offer it;

each SDPA form under every SDPA backend that accepts it (``--forms`` and ``--backends``
pick a subset), for SAM's global blocks (the whole grid) and its windowed blocks (14×14
windows of the padded grid). Throughput is in *model*
TFLOP/s: ``QKᵀ`` and ``AV`` at the real head width (64), as in :mod:`opticmem.encoder.flops`,
so the extra work of the folded dims shows as lost throughput. Prints a Markdown table
and writes it to ``--out``::

    python -m benchmarks.sam_attention_speed --out benchmarks/results/sam_attention_h200.md
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention

from benchmarks import publish
from benchmarks.encoder_speed import Timer
from opticmem.encoder.sam import augmented_attention

BACKENDS: dict[str, list[SDPBackend] | None] = {
    "auto": None,
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
}
FORMS = ("bias", "augment", "augment-vpad", "flex")
HEADS, HEAD_DIM, WINDOW = 12, 64, 14


def flex_rel_pos_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor:
    """SAM's rel-pos attention with the bias gathered per score inside FlexAttention.

    Shapes as :func:`opticmem.encoder.sam.augmented_attention`; key ``k`` sits at row
    ``k // W``, column ``k % W`` of the grid, ``W = rel_w.shape[-1]``.
    """
    W = rel_w.shape[-1]

    def add_rel_pos(
        score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor,
        kv_idx: torch.Tensor,
    ) -> torch.Tensor:
        return score + rel_h[b, h, q_idx, kv_idx // W] + rel_w[b, h, q_idx, kv_idx % W]

    return cast(torch.Tensor, flex_attention(q, k, v, score_mod=add_rel_pos))


def _time_ms(fn: Callable[[], object], repeats: int) -> float:
    timer = Timer(torch.device("cuda"))
    for _ in range(2):
        fn()
    return statistics.median(timer(fn) for _ in range(repeats)) * 1e3


def _inputs(batch: int, side: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device=device).manual_seed(0)
    T = side * side

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device, dtype=torch.bfloat16)

    q, k, v = (rand(batch, HEADS, T, HEAD_DIM) for _ in range(3))
    return q, k, v, rand(batch, HEADS, T, side) * 0.1, rand(batch, HEADS, T, side) * 0.1


def _variant(name: str, inputs: tuple[torch.Tensor, ...]) -> Callable[[], torch.Tensor]:
    q, k, v, rel_h, rel_w = inputs
    scale = HEAD_DIM**-0.5
    if name == "bias":
        B, nh, T, _ = q.shape
        side = rel_h.shape[-1]
        rows = rel_h.reshape(B, nh, side, side, side, 1)
        mask = (rows + rel_w.reshape(B, nh, side, side, 1, side)).reshape(B, nh, T, T)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if name == "flex":
        flex = torch.compile(flex_rel_pos_attention, dynamic=False)
        return lambda: flex(q, k, v, rel_h, rel_w)
    pad_values = name == "augment-vpad"
    return lambda: augmented_attention(q, k, v, rel_h, rel_w, scale, pad_values=pad_values)


def measure(
    batch: int, repeats: int, forms: tuple[str, ...] = FORMS,
    backends: tuple[str, ...] = tuple(BACKENDS),
) -> list[tuple[str, str, str, int, float | None, str]]:
    device = torch.device("cuda")
    rows: list[tuple[str, str, str, int, float | None, str]] = []
    for tier, grid in (("base", 64), ("large", 80)):
        padded = math.ceil(grid / WINDOW) * WINDOW
        shapes = (("global", batch, grid), ("window", batch * (padded // WINDOW) ** 2, WINDOW))
        for block, b, side in shapes:
            T = side * side
            flops = 4 * b * HEADS * T * T * HEAD_DIM  # QKᵀ + AV at the model's head width
            inputs = _inputs(b, side, device)
            for variant in forms:
                kernel_choice = {"compiled": None} if variant == "flex" else {
                    name: kernels for name, kernels in BACKENDS.items() if name in backends
                }
                for backend, kernels in kernel_choice.items():
                    note = ""
                    ms: float | None = None
                    try:
                        fn = _variant(variant, inputs)
                        if kernels is None:
                            ms = _time_ms(fn, repeats)
                        else:
                            with sdpa_kernel(kernels):
                                ms = _time_ms(fn, repeats)
                    except (RuntimeError, torch.OutOfMemoryError) as err:
                        note = str(err).splitlines()[0][:60]
                    torch.cuda.empty_cache()
                    tflops = f"{flops / (ms / 1e3) / 1e12:.0f}" if ms else ""
                    rows.append((f"{tier} {block}", variant, backend, b, ms, tflops or note))
                    print(rows[-1], flush=True)
            del inputs
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sam_attention.md"))
    ap.add_argument("--batch", type=int, default=32, help="pages per batch")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated, of {FORMS}")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help=f"comma-separated SDPA backends, of {tuple(BACKENDS)}")
    args = ap.parse_args(argv)
    forms = tuple(args.forms.split(","))
    backends = tuple(args.backends.split(","))
    unknown = sorted(set(forms) - set(FORMS)) + sorted(set(backends) - set(BACKENDS))
    if unknown:
        ap.error(f"unknown form or backend: {', '.join(unknown)}")
    if not torch.cuda.is_available():
        print("sam_attention_speed needs a CUDA GPU", file=sys.stderr)
        return 2
    rows = measure(args.batch, args.repeats, forms, backends)
    lines = [
        f"## SAM attention forms and SDPA kernels — {torch.cuda.get_device_name()}, bf16, "
        f"torch {torch.__version__}, {args.batch} pages",
        "",
        "Model TFLOP/s counts QKᵀ and AV at head width 64 (extra folded dims are overhead); "
        "`flex` runs compiled, the others eager.",
        "",
        "| blocks | form | backend | batch×windows | median ms | model TFLOP/s or error |",
        "|---|---|---|---|---|---|",
    ]
    for what, variant, backend, b, ms, tail in rows:
        shown = f"{ms:.2f}" if ms else ""
        lines.append(f"| {what} | {variant} | {backend} | {b} | {shown} | {tail} |")
    text = "\n".join(lines) + "\n"
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
