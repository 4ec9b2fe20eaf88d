"""Decoding steps on CPU straight on the decoder's fp16 weight copies.

Decoding a page or a few on a CPU is bound by per-op overhead, not arithmetic: through
the modules, one row's step of the bundled decoder makes ~680 Python-level torch calls —
most of them reads of tensor attributes that check each fp16 copy is still current, the
rest module plumbing, views and reshapes — where ~160 do the step. :class:`CopyStep` takes
those copies once per
:func:`~opticmem.encoder.generate.generate` call — the products'
(:class:`~opticmem.encoder.half_linear.HalfLinear`) and the MoE layers' expert copies
(:meth:`~opticmem.encoder.moe.MoE.copies`) — and runs the step's norms, products, rotary
positions, cache writes and attention on them directly. They are the same ops on the same
operands as the modules' path, so the logits are bit-identical (tested); on a 2-vCPU EPYC
a Small page decodes 18–22% faster (``benchmarks/cpu_decode_paths.py``).

It applies to rows at one position (no left padding) of an fp32 decoder on CPU whose
every product has an fp16 copy and whose MoE layers take a copy path
(:meth:`~opticmem.encoder.moe.MoE.copy_path`) for that many rows, with a cache that is
not pinned and no hooks on the decoder's modules; :meth:`CopyStep.build` returns ``None``
otherwise, and the modules run. The weights must not change during the call (the copies
are taken at its start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from opticmem.encoder.decoder import (
    Attention,
    DecoderLayer,
    KVCache,
    MoEDecoder,
    RMSNorm,
    apply_rotary,
)
from opticmem.encoder.moe import MLP, CopyPath, MoE


@dataclass(frozen=True)
class _Layer:
    """One decoder layer's operands for a step."""

    attn_norm: RMSNorm
    qkv: Any  # fp16 copy of the packed (3·nh·hd, H) projection
    out: Any  # fp16 copy of o_proj
    mlp_norm: RMSNorm
    dense: tuple[Any, Any] | None  # a dense MLP's gate|up and down copies
    moe: MoE | None
    path: CopyPath | None  # the MoE's copy path for the cache's rows
    copies: dict[tuple[int, ...], tuple[Any, Any]] | None  # and its copies


class CopyStep:
    """``step(x (B, 1, D)) -> logits (B, V)``: the decoder's next position for every row of
    ``cache`` (all at the same position), which it writes and advances, as
    ``decoder.logits(decoder(x, None, None, cache)[:, -1])`` would."""

    def __init__(self, decoder: MoEDecoder, cache: KVCache, layers: list[_Layer],
                 head: Any) -> None:
        self._decoder = decoder
        self._cache = cache
        self._layers = layers
        self._head = head
        cfg = decoder.cfg
        self._heads, self._head_dim = cfg.heads, cfg.head_dim
        self._table = cache.rotary_table()  # (2, capacity, hd)

    @classmethod
    def build(cls, decoder: MoEDecoder, cache: KVCache) -> CopyStep | None:
        """The step for ``cache``'s rows, or ``None`` where it does not apply (see the
        module docstring). The caller keeps the rows at one position: no left padding."""
        k = cache.keys[0]
        if (
            cache.pinned
            or k.device.type != "cpu"
            or k.dtype != torch.float32
            or torch.is_grad_enabled()
            or type(decoder) is not MoEDecoder
            or any(m._forward_hooks or m._forward_pre_hooks for m in decoder.modules())
        ):
            return None
        layers = []
        for layer in decoder.layers:
            if type(layer) is not DecoderLayer or type(layer.attn) is not Attention:
                return None
            step = _layer(layer, cache.batch)
            if step is None:
                return None
            layers.append(step)
        head = decoder.head_copy()
        return None if head is None else cls(decoder, cache, layers, head)

    def __call__(self, x: Tensor) -> Tensor:
        linear = torch.ops.quantized.linear_dynamic_fp16
        cache, nh, hd = self._cache, self._heads, self._head_dim
        p = cache.length
        if p >= cache.capacity:
            raise RuntimeError(f"KV cache full: {p + 1} positions > capacity {cache.capacity}")
        cs = self._table[:, p]  # (2, hd)
        cos, sin = cs[0], cs[1]
        B = x.shape[0]
        x = x.view(B, -1)  # (B, H)
        for i, layer in enumerate(self._layers):
            qkv = linear(_norm(layer.attn_norm, x), layer.qkv).view(B, 3, nh, hd)
            qk = apply_rotary(qkv[:, :2], cos, sin)  # (B, 2, nh, hd)
            keys, values = cache.keys[i], cache.values[i]  # (B, nh, capacity, hd)
            keys[:, :, p] = qk[:, 1]
            values[:, :, p] = qkv[:, 2]
            att = F.scaled_dot_product_attention(
                qk[:, 0].unsqueeze(2), keys[:, :, : p + 1], values[:, :, : p + 1]
            )  # (B, nh, 1, hd)
            x = linear(att.view(B, nh * hd), layer.out).add_(x)
            h = _norm(layer.mlp_norm, x)
            if layer.dense is not None:
                g, u = linear(h, layer.dense[0]).chunk(2, dim=-1)
                x = linear(F.silu(g).mul_(u), layer.dense[1]).add_(x)
            else:
                assert layer.moe is not None and layer.path and layer.copies is not None
                x = layer.moe.forward_on_copies(layer.path, layer.copies, h, x)
        cache.advance(1)
        return linear(_norm(self._decoder.norm, x), self._head)  # (B, V)


def _norm(norm: RMSNorm, x: Tensor) -> Tensor:
    """``norm(x)`` for fp32 ``x`` (:class:`RMSNorm`'s fp32 path) without a module call."""
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.eps)


def _layer(layer: DecoderLayer, rows: int) -> _Layer | None:
    """``layer``'s copies for ``rows`` tokens a step, or ``None`` where one is missing or
    its MLP is of another kind."""
    attn = layer.attn.fp16_copies()
    if attn is None:
        return None
    dense, moe, path, copies = None, None, None, None
    mlp = layer.mlp
    if type(mlp) is MoE:
        moe, path = mlp, mlp.copy_path(rows)
        copies = mlp.copies(path) if path is not None else None
        if copies is None:
            return None
    elif type(mlp) is MLP:
        dense = mlp.fp16_copies()
        if dense is None:
            return None
    else:
        return None
    return _Layer(layer.attn_norm, attn[0], attn[1], layer.mlp_norm, dense, moe, path, copies)
