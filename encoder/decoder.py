"""The MoE language decoder (DeepSeek-V2 family as DeepSeek-OCR configures it).

Token embedding → layers of [RMSNorm → multi-head attention with rotary positions →
residual → RMSNorm → MLP (dense in the first ``first_k_dense`` layers, MoE after) →
residual] → RMSNorm → untied LM head. Attention is plain MHA (``use_mla: false``) with
Llama's rotate-half RoPE and runs through ``scaled_dot_product_attention``.

The forward works on embeddings, not ids: the model (:mod:`opticmem.encoder.model`)
scatters vision tokens into the ``<image>`` positions first. A :class:`KVCache` makes
incremental decoding cost one position per step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opticmem.encoder.config import DecoderConfig
from opticmem.encoder.half_linear import HalfLinear
from opticmem.encoder.moe import MLP, MoE, add_linear
from opticmem.encoder.packing import PackedWeights, needs_grad


class RMSNorm(nn.Module):
    """``x / rms(x) · weight``, computed in fp32 and cast back."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # The reference's order: normalise in fp32, cast back, then multiply by the weight in
        # the model's dtype. rms_norm computes in fp32 and casts its result back itself, so
        # that is two ops (kernels) instead of eight.
        return self.weight * F.rms_norm(x, (x.shape[-1],), None, self.eps)


def rotary(
    position_ids: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Rotary tables for ``position_ids`` (B, T): ``cos`` and the signed ``sin``, (B, 1, T, hd).

    Llama's rotate-half RoPE is ``x·cos + rotate_half(x)·sin`` with
    ``rotate_half([x1, x2]) = [−x2, x1]``; folding the sign into ``sin`` (``[−s, s]``) makes
    it ``x·cos + roll(x, hd/2)·sin`` (:func:`apply_rotary`).
    """
    exponents = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32)
    inv_freq = 1.0 / theta ** (exponents / head_dim)  # (hd/2,)
    freqs = position_ids.float()[..., None] * inv_freq  # (B, T, hd/2)
    cos = freqs.cos()
    sin = freqs.sin()
    cos = torch.cat([cos, cos], dim=-1)[:, None]  # (B, 1, T, hd)
    sin = torch.cat([-sin, sin], dim=-1)[:, None]  # (B, 1, T, hd)
    return cos.to(dtype), sin.to(dtype)


def rotary_table(length: int, head_dim: int, theta: float, device: torch.device,
                 dtype: torch.dtype) -> Tensor:
    """``(2, length, hd)``: :func:`rotary`'s ``cos`` and signed ``sin`` for positions
    ``0 … length−1``, to look positions up in instead of recomputing them every step.

    Each entry is computed exactly as :func:`rotary` computes it, so a lookup is
    bit-identical to a direct call.
    """
    cos, sin = rotary(torch.arange(length, device=device)[None], head_dim, theta, dtype)
    return torch.stack([cos[0, 0], sin[0, 0]])  # (2, length, hd)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (…, T, hd) by the tables of :func:`rotary` (signed ``sin``)."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)  # 3 ops, not 4


class KVCache:
    """Preallocated keys and values for every layer: (B, nh, capacity, hd) each.

    ``length`` positions are filled. A forward writes its ``T`` new positions into every
    layer at ``[length, length+T)`` and then calls :meth:`advance`. The cache also holds the
    rotary table of its ``capacity`` positions (:meth:`rotary`), built on first use: a
    position is at most the column it is cached in, so every position of a cached sequence
    is below ``capacity``.

    :meth:`pin` switches to fixed shapes for CUDA graphs: one position per row written at
    that row's column, read from the device, and a fixed number of columns returned.
    """

    def __init__(
        self,
        cfg: DecoderConfig,
        batch: int,
        capacity: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (batch, cfg.heads, capacity, cfg.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.layers)]
        self.capacity = capacity
        self.length = 0
        self._cfg = cfg
        self._rope: Tensor | None = None  # (2, capacity, hd), built on first use
        self._column: Tensor | None = None  # pinned write column per row (B,), see pin()
        self._rows: Tensor | None = None  # arange(B) on the device, for pinned writes
        self._width = 0

    def pin(self, columns: Tensor | None, width: int = 0) -> None:
        """Fixed shapes: :meth:`update` writes row ``b``'s single position at column
        ``columns[b]`` (a (B,) long tensor on the cache's device) and returns the first
        ``width`` columns, whatever ``length`` says. The caller masks the columns each row
        may not read. ``None`` restores the normal behaviour."""
        if columns is not None and not 0 < width <= self.capacity:
            raise ValueError(f"pinned width must be in 1..{self.capacity}, got {width}")
        if columns is not None and self._rows is None:
            self._rows = torch.arange(self.batch, device=columns.device)
        self._column, self._width = columns, width

    @property
    def pinned(self) -> bool:
        """Whether :meth:`pin` switched the cache to fixed shapes."""
        return self._column is not None

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    def load_rows(self, rows: Tensor, source: KVCache) -> None:
        """Copy ``source``'s filled columns (its rows in order) into ``rows`` of this cache,
        from column 0: those rows start new sequences. Later columns keep stale values,
        which the caller's mask hides."""
        n = source.length
        for mine, theirs in zip(self.keys + self.values, source.keys + source.values,
                                strict=True):
            mine[rows, :, :n] = theirs[:, :, :n]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, nh, T, hd) keys/values; return all filled ones, (B, nh, length+T, hd)."""
        if self._column is not None:  # pinned: no host value decides where or how much
            keys, values = self.keys[layer], self.values[layer]
            keys[self._rows, :, self._column] = k[:, :, 0]  # (B, nh, hd) at each row's column
            values[self._rows, :, self._column] = v[:, :, 0]
            return keys.narrow(2, 0, self._width), values.narrow(2, 0, self._width)
        T = k.shape[2]
        end = self.length + T
        if end > self.capacity:
            raise RuntimeError(f"KV cache full: {end} positions > capacity {self.capacity}")
        keys, values = self.keys[layer], self.values[layer]
        keys.narrow(2, self.length, T).copy_(k)
        values.narrow(2, self.length, T).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def rotary(self, position_ids: Tensor | None, T: int) -> tuple[Tensor, Tensor]:
        """``cos``, signed ``sin`` (B or 1, 1, T, hd) for ``position_ids`` (B, T), or for the
        next ``T`` positions ``length …`` when ``None``; looked up, not recomputed."""
        table = self.rotary_table()
        if position_ids is None:
            cs = table[:, None, self.length : self.length + T]  # (2, 1, T, hd)
        else:
            cs = table[:, position_ids]  # (2, B, T, hd)
        return cs[0][:, None], cs[1][:, None]

    def rotary_table(self) -> Tensor:
        """``(2, capacity, hd)``: :func:`rotary_table` for every position the cache holds,
        built on first use."""
        table = self._rope
        if table is None:
            cfg, k = self._cfg, self.keys[0]
            table = rotary_table(self.capacity, cfg.head_dim, cfg.rope_theta, k.device, k.dtype)
            self._rope = table
        return table

    def advance(self, steps: int) -> None:
        self.length += steps


class Attention(nn.Module):
    """Multi-head attention (as many KV heads as query heads) with rotary positions."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.head_dim
        inner = cfg.heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, inner, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, inner, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, inner, bias=False)
        self.o_proj = nn.Linear(inner, cfg.hidden_size, bias=False)
        self._qkv = PackedWeights(
            [[self.q_proj, self.k_proj, self.v_proj]], stacked=False
        )  # (3·nh·hd, H), viewed by the three parameters
        self._qkv_half = HalfLinear()
        self._o_half = HalfLinear()

    def fp16_copies(self) -> tuple[Any, Any] | None:
        """The fp16 copies of the packed q|k|v projection and of ``o_proj`` that this
        module's CPU products use (:meth:`HalfLinear.prepare_for`), made now if need be;
        ``None`` where either has none."""
        qkv = self._qkv_half.prepare_for(self._qkv.get())
        out = self._o_half.prepare_for(self.o_proj.weight)
        return None if qkv is None or out is None else (qkv, out)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        cache: KVCache | None,
        layer: int,
        residual: Tensor | None = None,
    ) -> Tensor:
        """Attention output (B, T, H), added to ``residual`` (B, T, H) when given — without
        gradients inside the output projection's matmul."""
        B, T, _ = x.shape
        nh, hd = self.heads, self.head_dim
        if torch.is_grad_enabled() and needs_grad(
            [self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]
        ):
            qkv = torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)
        else:
            qkv = self._qkv_half(x, self._qkv.get())  # (B, T, 3·nh·hd)
        qkv = qkv.view(B, T, 3, nh, hd).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hd)
        qk = apply_rotary(qkv[:2], cos, sin)  # (2, B, nh, T, hd)
        q, k, v = qk[0], qk[1], qkv[2]
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, nh, Tk, hd)
        Tk = k.shape[2]
        if mask is not None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif T == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        elif Tk == T:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, Tk, q.device))
        out = out.transpose(1, 2).reshape(B, T, nh * hd)  # (B, T, nh·hd)
        if residual is None:
            return self._o_half(out, self.o_proj.weight)
        if torch.is_grad_enabled() and needs_grad([self.o_proj.weight]):
            return residual + self.o_proj(out)
        return add_linear(residual, out, self.o_proj.weight, half=self._o_half)


def causal_mask(T: int, Tk: int, device: torch.device) -> Tensor:
    """Boolean (T, Tk) mask where query i (the last T of Tk positions) sees keys ≤ its own."""
    q_pos = torch.arange(Tk - T, Tk, device=device)[:, None]
    return torch.arange(Tk, device=device)[None, :] <= q_pos


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp: nn.Module = (
            MoE(cfg) if cfg.is_moe_layer(index) else MLP(cfg.hidden_size, cfg.dense_intermediate)
        )

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None,
        balanced: Tensor | None = None,
    ) -> Tensor:
        x = self.attn(self.attn_norm(x), cos, sin, mask, cache, self.index, residual=x)
        if balanced is not None and isinstance(self.mlp, MoE):
            return self.mlp(self.mlp_norm(x), residual=x, balanced=balanced)
        return self.mlp(self.mlp_norm(x), residual=x)  # (B, T, H)


class MoEDecoder(nn.Module):
    """Embeddings (B, T, H) → final hidden states (B, T, H); :meth:`logits` applies the head."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self._head_half = HalfLinear()

    def forward(
        self,
        embeds: Tensor,
        position_ids: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        balanced: Tensor | None = None,
    ) -> Tensor:
        """Run the layers.

        ``position_ids`` (B, T) default to ``cache.length + arange(T)``; with a cache they
        must be below its capacity (true of any position a cached sequence can hold).
        ``mask`` is a boolean (B, 1, T, Tk) "may attend" mask; ``None`` means plain causal
        attention over everything cached plus the new positions. ``balanced`` (B, T) bool
        marks the steps the MoE layers' load-balancing losses average over in training
        (all without it; see :func:`~opticmem.encoder.examples.collate`).
        """
        B, T, _ = embeds.shape
        if cache is not None:
            cos, sin = cache.rotary(position_ids, T)  # table lookup: no per-step trigonometry
        else:
            if position_ids is None:
                position_ids = torch.arange(T, device=embeds.device).expand(B, T)
            cos, sin = rotary(position_ids, self.cfg.head_dim, self.cfg.rope_theta, embeds.dtype)
        x = embeds
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache, balanced)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """LM head: (…, H) → (…, vocab)."""
        return self._head_half(hidden, self.lm_head.weight)

    def head_copy(self) -> Any:
        """The LM head's fp16 copy that :meth:`logits` uses on CPU, or ``None``."""
        return self._head_half.prepare_for(self.lm_head.weight)

    def aux_loss(self) -> Tensor | None:
        """Sum of the MoE layers' load-balancing losses from the last training forward."""
        losses = [
            layer.mlp.aux_loss
            for layer in self.layers
            if isinstance(layer.mlp, MoE) and layer.mlp.aux_loss is not None
        ]
        return torch.stack(losses).sum() if losses else None
