"""Which CPU matrix product reads a decoding step's weights fastest.

One decoding step of the bundled codec multiplies a few rows by every weight the token
touches: the attention projections, the dense MLP, the router, two routed experts and
the shared expert of each MoE layer, the layout aligner's projection and the LM head. The
weights are taken from the ``bundled`` preset's shapes, rounded to bf16 values as shipped,
and each form of the product runs over the whole set in turn, so weights are not
cache-hot between their uses (as in decoding, where the KV cache and the rest of the step
come between them). Forms:

- ``fp32 F.linear`` — PyTorch's default (MKL on x86);
- ``bf16 F.linear`` — the same in bf16 (weights and inputs);
- ``oneDNN packed fp32`` / ``bf16`` — weights reordered once for oneDNN;
- ``fbgemm fp16`` — weights packed once as fp16, inputs and sums in fp32
  (:class:`opticmem.encoder.half_linear.HalfLinear`, the codec's path);
- ``fbgemm int8 dynamic`` — weights int8 per output channel, inputs quantized per call
  (lossy: for comparison only).

Prints a table (milliseconds per set, per row count) and writes
``benchmarks/results/cpu_linear_forms.md``::

    OMP_NUM_THREADS=2 python -m benchmarks.cpu_linear_forms [--rows 1,16,128,512]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks import publish
from opticmem.encoder.config import preset

RESULTS = Path(__file__).parent / "results" / "cpu_linear_forms.md"

Product = Callable[[torch.Tensor], torch.Tensor]


def step_shapes() -> list[tuple[int, int]]:
    """``(out, in)`` of every product one token of the bundled decoder runs."""
    cfg = preset("bundled")
    d = cfg.decoder
    H = d.hidden_size
    inner = d.heads * d.head_dim
    shapes: list[tuple[int, int]] = []
    for layer in range(d.layers):
        shapes += [(3 * inner, H), (H, inner)]
        if d.is_moe_layer(layer):
            shapes.append((d.routed_experts, H))
            for width in [d.moe_intermediate] * d.experts_per_token + [d.shared_intermediate]:
                shapes += [(2 * width, H), (H, width)]
        else:
            shapes += [(2 * d.dense_intermediate, H), (H, d.dense_intermediate)]
    if cfg.align is not None:
        shapes.append((H, cfg.align.points * cfg.align.point_dim))
    shapes.append((d.vocab_size, H))
    return shapes


def _linear(weight: torch.Tensor, dtype: torch.dtype, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x.to(dtype), weight)


def _onednn(packed: torch.Tensor, dtype: torch.dtype, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), packed, None, "none", [], "")


def _fbgemm_fp16(packed: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic_fp16(x, packed)


def _fbgemm_int8(packed: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic(x, packed)


def forms(weights: list[torch.Tensor]) -> dict[str, list[Product]]:
    """Each form's products, one per weight, prepared once."""
    out: dict[str, list[Product]] = {}
    bf16 = [w.bfloat16() for w in weights]
    out["fp32 F.linear"] = [partial(_linear, w, torch.float32) for w in weights]
    out["bf16 F.linear"] = [partial(_linear, w, torch.bfloat16) for w in bf16]
    mkldnn = torch.ops.mkldnn
    if torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_reorder_linear_weight"):
        for name, ws, dtype in (("oneDNN packed fp32", weights, torch.float32),
                                ("oneDNN packed bf16", bf16, torch.bfloat16)):
            out[name] = [partial(_onednn, mkldnn._reorder_linear_weight(w, 1), dtype)
                         for w in ws]
    quantized = torch.ops.quantized
    if "fbgemm" in torch.backends.quantized.supported_engines:
        out["fbgemm fp16"] = [partial(_fbgemm_fp16, quantized.linear_prepack_fp16(w, None))
                              for w in weights]
        int8: list[Product] = []
        for w in weights:
            scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-8).double()
            with warnings.catch_warnings():  # qint8 tensors are deprecated (torch ≥ 2.13)
                warnings.simplefilter("ignore", UserWarning)
                q = torch.quantize_per_channel(
                    w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
            int8.append(partial(_fbgemm_int8, quantized.linear_prepack(q, None)))
        out["fbgemm int8 dynamic"] = int8
    return out


def time_set(products: list[Product], inputs: list[torch.Tensor], min_seconds: float) -> float:
    """Milliseconds for one pass over the whole set (best of the repetitions' mean)."""
    def one_pass() -> None:
        for f, x in zip(products, inputs, strict=True):
            f(x)

    one_pass()
    reps, elapsed = 0, 0.0
    start = time.perf_counter()
    while elapsed < min_seconds or reps < 3:
        one_pass()
        reps += 1
        elapsed = time.perf_counter() - start
    return elapsed / reps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,16,128,512")
    parser.add_argument("--seconds", type=float, default=2.0, help="per form and row count")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]

    torch.manual_seed(0)
    shapes = step_shapes()
    weights = [(torch.randn(o, i) * 0.05).bfloat16().float() for o, i in shapes]
    table = forms(weights)
    names = list(table)
    params = sum(o * i for o, i in shapes)
    header = ["rows", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m in rows:
        inputs = [torch.randn(m, i) for _, i in shapes]
        ms = {name: time_set(table[name], inputs, args.seconds) for name in names}
        lines.append(f"| {m} | " + " | ".join(f"{ms[n]:.3f}" for n in names) + " |")
        print(lines[-1], flush=True)
    text = "\n".join([
        "# CPU matrix products over one decoding step's weights (ms per set)",
        "",
        f"Device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads; torch {torch.__version__}; {len(shapes)} products, {params / 1e6:.2f} M "
        "weights (the bundled decoder's per-token set, bf16 values).",
        "",
        *lines,
        "",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
