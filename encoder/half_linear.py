"""CPU linear layers through fp16 copies of their weights, for decoding a page or a few.

Decoding one page on a CPU multiplies one row by every decoder weight at every step, so
a step's matrix products wait on reading the weights from memory, not on arithmetic.
The bundled weights ship as bf16, and fp16 holds every bf16 value exactly except in its
subnormal range (|w| < 6.1e-5), where it rounds by at most 2⁻²⁵. fbgemm's fp16 GEMM
keeps such a copy (half the bytes of fp32) and multiplies in fp32, so the products
match the fp32 ones to float rounding. On a 2-vCPU AMD EPYC the decoder's per-token set
of products took 3.7 ms with MKL in fp32 and 0.73 ms this way, 6.8 and 2.0 ms for 16 rows,
and fbgemm was still 1.1× faster at 512 rows (``benchmarks/cpu_linear_forms.py``).

A copy is made only when it is that close to the weight (:func:`holds_exactly`): weights
trained or loaded in fp32, such as the random ones of the equivalence checks against
reference code, keep the fp32 path. The copies cost half the decoder's fp32 bytes in
memory, once. Builds without fbgemm's fp16 ops (non-x86, or a PyTorch that drops them
with the rest of its old quantization stack) run the fp32 path throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

WeightAndBias = tuple[Tensor, Tensor | None]
"""A product's fp32 ``(weight (out, in), bias or None)``."""

_SUBNORMAL_ROUNDING = 2.0**-25
"""The largest error of a bf16 value stored as fp16: half fp16's subnormal spacing."""


def fbgemm_available() -> bool:
    """Whether this PyTorch build has fbgemm's fp16 linear (x86 builds do)."""
    return "fbgemm" in torch.backends.quantized.supported_engines and hasattr(
        torch.ops.quantized, "linear_prepack_fp16"
    )


_FBGEMM = fbgemm_available()


def holds_exactly(weight: Tensor) -> bool:
    """True when fp16 keeps ``weight`` to within subnormal rounding (every value of a bf16
    checkpoint); NaN or a value beyond fp16's range makes it False.

    Checked in slices of 64k values: whole-matrix temporaries, made and dropped for each of
    the MoE layers' 90 copies between the copies' own allocations, left tens of MB of freed
    memory that the allocator kept.
    """
    for part in weight.detach().reshape(-1).split(1 << 16):
        error = (part.half().float() - part).abs().max()
        if not bool(error <= _SUBNORMAL_ROUNDING):
            return False
    return True


class HalfLinear:
    """``x @ weight.T (+ bias)`` through an fbgemm fp16 copy of ``weight``, where it helps.

    The copy is made on first use and remade when the weight changes (its storage, or an
    in-place update); a weight fp16 cannot hold (:func:`holds_exactly`) is remembered as
    such and runs ``F.linear``. So do inputs off the CPU, not fp32, with more than
    :attr:`max_rows` rows, or whose weights autograd tracks now, and weights made under
    ``torch.inference_mode`` (they keep no version counter to notice changes by).
    """

    enabled: ClassVar[bool] = _FBGEMM
    """Off: every call is ``F.linear`` (set it to compare both paths)."""
    max_rows: ClassVar[int] = 256
    """Inputs with more rows (a long prompt's prefill) take MKL's fp32 GEMM."""

    def __init__(self) -> None:
        self._copy: tuple[tuple[object, ...], Any] | None = None  # (weight's key, packed)

    def __getstate__(self) -> dict[str, Any]:
        return {"_copy": None}  # derived data: a copied or pickled module remakes it

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        out = self.fp16_product(x, weight, bias)
        return F.linear(x, weight, bias) if out is None else out

    def fp16_product(
        self, x: Tensor, weight: Tensor, bias: Tensor | None = None
    ) -> Tensor | None:
        """``x @ weight.T (+ bias)`` (…, out) on the fp16 copy, or ``None`` where that path
        does not apply (see the class docstring)."""
        return self.product_of(x, _sources(weight, bias), lambda: (weight, bias))

    def prepare_for(self, weight: Tensor, bias: Tensor | None = None) -> Any:
        """:meth:`prepare` for :meth:`fp16_product`'s ``weight`` and ``bias``: the copy it
        multiplies by (``torch.ops.quantized.linear_dynamic_fp16(x, copy)`` is its product
        for 2-D ``x``), or ``None`` where there is none."""
        return self.prepare(_sources(weight, bias), lambda: (weight, bias))

    def product_of(
        self, x: Tensor, sources: Sequence[Tensor], build: Callable[[], WeightAndBias]
    ) -> Tensor | None:
        """:meth:`fp16_product` for a weight made from other tensors: ``build()`` returns
        ``(weight (out, in), bias or None)`` in fp32 from ``sources``, and runs again only
        when one of them changes (as the weight itself does for :meth:`fp16_product`). So
        several parameters serve as one product (every expert of a layer at once,
        :class:`~opticmem.encoder.moe.MoE`) without keeping their concatenation."""
        packed = self.copy_for_input(x, sources, build)
        if packed is None:
            return None
        if x.dim() == 2:  # a decoding step's rows: no reshapes (ops cost time here)
            return torch.ops.quantized.linear_dynamic_fp16(x, packed)
        out = torch.ops.quantized.linear_dynamic_fp16(x.reshape(-1, x.shape[-1]), packed)
        return out.view(*x.shape[:-1], out.shape[-1])  # (…, out)

    def copy_for_input(
        self, x: Tensor, sources: Sequence[Tensor], build: Callable[[], WeightAndBias]
    ) -> Any:
        """The copy :meth:`product_of` would multiply ``x`` by (:meth:`prepare`), or
        ``None`` where its fp16 path does not apply to ``x`` (see the class docstring)."""
        if not (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.numel() <= self.max_rows * x.shape[-1]
        ):
            return None
        return self.prepare(sources, build)

    def prepare(self, sources: Sequence[Tensor], build: Callable[[], WeightAndBias]) -> Any:
        """Make the fp16 copy :meth:`product_of` would use for ``sources``, ahead of the
        first product (a no-op while it is current); ``None`` where there is none to make
        (disabled, sources not fp32, tracked by autograd or inference tensors, or a weight
        fp16 cannot hold)."""
        if not self.enabled:
            return None
        tracking = torch.is_grad_enabled()
        key: tuple[object, ...] = ()
        for s in sources:
            if s.dtype != torch.float32 or s.is_inference() or (tracking and s.requires_grad):
                return None  # inference tensors keep no version counter to notice changes by
            key += (s.data_ptr(), s._version, s.shape, s.stride())
        copy = self._copy
        if copy is None or copy[0] != key:
            with torch.no_grad():
                weight, bias = build()
                packed = (
                    torch.ops.quantized.linear_prepack_fp16(
                        weight.detach().contiguous(),
                        None if bias is None else bias.detach().contiguous(),
                    )
                    if holds_exactly(weight)
                    else None
                )
            copy = self._copy = (key, packed)
        return copy[1]


def _sources(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, ...]:
    return (weight,) if bias is None else (weight, bias)
