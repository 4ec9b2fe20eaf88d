"""Gated MLPs and the DeepSeek-V2 mixture-of-experts layer.

Every token is routed by a softmax over ``routed_experts`` router logits; the
``experts_per_token`` highest-scoring experts ("greedy" top-k) are run and their outputs
summed with the raw softmax scores as weights (no renormalisation in the official
model), and the shared experts (one wider MLP) are added for every token.

Both layers take an optional ``residual`` and return ``residual + layer(x)``: without
gradients the last projection then adds into the residual stream in its own matmul
(``addmm``), one op per layer fewer than a matmul and an add. In small-batch CPU decoding a
step is mostly per-op overhead, so ops saved are time saved.

The per-expert ``gate_proj``/``up_proj``/``down_proj`` parameters (the official checkpoint's
layout) are the source of truth. For inference without gradients the layer packs them
into stacked tensors **that the parameters then view** (:mod:`opticmem.encoder.packing`;
no second copy of the weights) and picks one of six paths:

* ``grouped`` — sort (token, expert) pairs by expert and run each *used* expert once on
  its tokens. Reads only the experts in use; needs one host sync for the counts. Used for
  large token counts (prefill), and always when gradients are needed (then through the
  expert modules).
* ``few`` — CPU, at most 8 (token, expert) pairs (small-batch decoding): one mat-vec per
  pair on the packed views; no sorting. In fp32 each pair's output is added, scaled by
  its routing weight, straight into the layer's output; with bf16-valued weights the
  mat-vecs run on fp16 copies (:mod:`opticmem.encoder.half_linear`), as do the shared
  experts' and the dense MLP's.
* ``sets`` and ``fused`` — CPU, where the fp16 copies apply (bf16-valued weights): the
  experts a token uses run as one product over their gate|up rows and one over their
  down columns, the shared experts included. ``sets`` (one token, or two) keeps a copy per
  set of ``experts_per_token`` experts a token can be routed to, all made with the first
  token: only the chosen experts' weights are read, in two products instead of six.
  ``fused`` (up to ``cpu_fused_max_tokens``) runs every expert on every token in two
  products, the unselected experts' activations weighted by 0. On a CPU, a step of one or
  a few rows is bound by per-op overhead and by the bytes of weights it reads, not by
  arithmetic (``benchmarks/cpu_decode_paths.py``).
* ``gather`` — CUDA, few (token, expert) pairs as in small-batch decoding: gather the
  selected experts' weights and run batched mat-vecs; no sync, no Python loop.
* ``dense`` — moderate token counts (CUDA; on CPU, batches of decoding rows too large
  for ``few``): every expert on every token in two batched matmuls, weighted by the
  (mostly zero) routing weights; no sync, no Python loop, few ops.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opticmem.encoder.config import DecoderConfig
from opticmem.encoder.half_linear import HalfLinear, WeightAndBias
from opticmem.encoder.packing import PackedWeights, needs_grad

log = logging.getLogger(__name__)

Dispatch = Literal["auto", "sets", "fused", "few", "gather", "dense", "grouped"]
CopyPath = Literal["sets", "fused"]
"""The CPU paths on fp16 copies of the experts."""
TrainDispatch = Literal["grouped", "dense"]
"""The paths that train the routed experts (see :attr:`MoE.train_dispatch`)."""


class MLP(nn.Module):
    """SiLU-gated MLP: ``down(silu(gate(x)) · up(x))``, no biases.

    Without gradients (and ``fuse``), ``gate_proj`` and ``up_proj`` run as one matmul on a
    packed ``(2I, H)`` weight that the two parameters view.
    """

    def __init__(self, dim: int, hidden: int, fuse: bool = True) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        self._gate_up = (
            PackedWeights([[self.gate_proj, self.up_proj]], stacked=False)
            if fuse
            else None
        )
        self._gate_up_half = HalfLinear()
        self._down_half = HalfLinear()

    def gate_up(self) -> Tensor:
        """``(2I, dim)``: the gate rows, then the up rows (the packed view when fused)."""
        if self._gate_up is not None:
            return self._gate_up.get()
        return torch.cat([self.gate_proj.weight, self.up_proj.weight])

    def fp16_copies(self) -> tuple[Any, Any] | None:
        """The fp16 copies of the packed gate|up and of ``down_proj`` that the fused CPU
        products use, made now if need be; ``None`` unfused or where either has none."""
        if self._gate_up is None:
            return None
        gate_up = self._gate_up_half.prepare_for(self._gate_up.get())
        down = self._down_half.prepare_for(self.down_proj.weight)
        return None if gate_up is None or down is None else (gate_up, down)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``residual + mlp(x)`` (``mlp(x)`` without a residual), (..., dim)."""
        if self._gate_up is None or (
            torch.is_grad_enabled() and needs_grad([self.gate_proj.weight, self.up_proj.weight])
        ):
            out = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
            return out if residual is None else residual + out
        g, u = self._gate_up_half(x, self._gate_up.get()).chunk(2, dim=-1)  # (..., I) each
        h = F.silu(g).mul_(u)  # (..., I)
        if residual is None:
            return self._down_half(h, self.down_proj.weight)
        return add_linear(residual, h, self.down_proj.weight, half=self._down_half)


def add_linear(acc: Tensor, x: Tensor, weight: Tensor, alpha: float = 1.0,
               half: HalfLinear | None = None) -> Tensor:
    """``acc + alpha · x @ weight.T`` as one ``addmm`` (a new tensor): ``acc`` (..., O),
    ``x`` (..., I) with the same leading dims, ``weight`` (O, I). With ``half``, the
    product goes through it (:class:`~opticmem.encoder.half_linear.HalfLinear`) and is
    then added, wherever it takes its fp16 path."""
    product = half.fp16_product(x, weight) if half is not None else None
    if product is not None:  # a new tensor: the sum may go into it
        return product.add_(acc) if alpha == 1.0 else torch.add(acc, product, alpha=alpha)
    out = torch.addmm(acc.reshape(-1, acc.shape[-1]), x.reshape(-1, x.shape[-1]), weight.t(),
                      alpha=alpha)  # (N, O)
    return out.view(acc.shape)


class MoE(nn.Module):
    """Routed experts + shared experts over (B, T, H) hidden states."""

    dispatch: Dispatch = "auto"
    """Which inference path to use; ``auto`` picks by token count (see module docstring)."""
    dense_max_tokens: int = 256
    """On CUDA, ``auto`` uses ``dense`` up to this many tokens, ``grouped`` above it."""
    cpu_set_max_tokens: int = 2
    """On CPU, ``auto`` uses ``sets`` up to this many tokens where it applies."""
    cpu_max_expert_sets: int = 64
    """``sets`` only when a token's experts can form at most this many sets (C(E, k)): the
    copies of all of them take C(E, k)·(k·I + Is)·3·H fp16 values, 27 MB a layer for the
    bundled codec's 15 sets of 2 of 6 experts (one page read 15 of them at every layer)."""
    cpu_fused_max_tokens: int = 48
    """On CPU, ``auto`` uses ``fused`` up to this many tokens where it applies and a token
    uses at least a quarter of the routed experts. Bundled codec's MoE layer, 2 cores, fp16
    copies: 170 / 540 / 940 / 1,610 µs fused against 260 / 780 / 1,330 / 1,510 µs by the
    unfused paths at 1 / 16 / 32 / 64 tokens."""
    cpu_dense_max_products: int = 192
    """On CPU, ``auto`` uses ``dense`` (beyond ``few``) while tokens × routed experts stays
    within this, ``grouped`` above it. Bundled codec, 2 cores, three MoE layers and the LM
    head: 2.9 / 4.8 ms dense vs 3.4 / 5.0 ms grouped at 8 / 32 tokens, 7.0 vs 6.6 at 64."""

    train_dispatch: TrainDispatch = "grouped"
    """How the routed experts run where autograd tracks them. ``grouped``: each expert on
    its own tokens, which needs every expert's token count on the host — on a GPU, a wait
    for the device in every MoE layer of every training step. ``dense``: every expert on
    every token in two matmuls over all the experts' weights, the unselected ones weighted
    0: E/k times the experts' multiply-adds, but no wait and two large GEMMs instead of a
    loop of small ones. Gradients are the same up to rounding."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.n_experts = cfg.routed_experts
        self.top_k = cfg.experts_per_token
        self.norm_topk_prob = cfg.norm_topk_prob
        self.scaling = cfg.routed_scaling_factor
        self.aux_loss_alpha = cfg.aux_loss_alpha
        self.expert_width = cfg.moe_intermediate
        """Each routed expert's intermediate width (I)."""
        self.router = nn.Linear(cfg.hidden_size, cfg.routed_experts, bias=False)
        self.experts = nn.ModuleList(
            MLP(cfg.hidden_size, cfg.moe_intermediate, fuse=False)
            for _ in range(cfg.routed_experts)
        )
        self.shared = (
            MLP(cfg.hidden_size, cfg.shared_intermediate) if cfg.shared_experts > 0 else None
        )
        experts = self.expert_list()
        self._gate_up = PackedWeights(
            [[e.gate_proj, e.up_proj] for e in experts], stacked=True
        )  # (E, 2I, H)
        self._down = PackedWeights([[e.down_proj] for e in experts], stacked=True)
        self._halves = [(HalfLinear(), HalfLinear()) for _ in experts]  # gate|up, down
        self._set_halves: dict[tuple[int, ...], tuple[HalfLinear, HalfLinear]] = {}
        """fp16 products over sets of experts (gate|up, down), by the sorted expert ids."""
        self.aux_loss: Tensor | None = None
        """Sequence-level load-balancing loss of the last training forward (DeepSeek-V2)."""
        self._router_cache: tuple[tuple[object, ...], Tensor] | None = None

    # ------------------------------------------------------------------ routing

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Router in fp32: returns (scores (N, E), weights (N, k), expert ids (N, k))."""
        w = self.router.weight
        if x.dtype == torch.float32 and w.dtype == torch.float32:
            logits = F.linear(x, w)  # (N, E); no casts to look up on the decoding path
        else:
            logits = F.linear(x.float(), self._router_fp32())  # (N, E)
        scores = logits.softmax(dim=-1)
        weights, ids = torch.topk(scores, self.top_k, dim=-1, sorted=False)  # (N, k)
        if self.top_k > 1 and self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        if self.scaling != 1.0:  # ×1.0 is exact: skip the op (the official model's case)
            weights = weights * self.scaling
        return scores, weights, ids

    def _router_fp32(self) -> Tensor:
        """The router weight in fp32; for a bf16 model the copy is kept until the weight
        changes (new storage or an in-place update), not made again every step."""
        w = self.router.weight
        if w.dtype == torch.float32 or (torch.is_grad_enabled() and w.requires_grad):
            return w.float()
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if self._router_cache is None or self._router_cache[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # usable outside decoding too
                self._router_cache = (key, w.detach().float())
        return self._router_cache[1]

    def forward(self, x: Tensor, residual: Tensor | None = None,
                balanced: Tensor | None = None) -> Tensor:
        """``residual + moe(x)`` (``moe(x)`` without a residual) over (B, T, H).

        In training, :attr:`aux_loss` averages over the steps ``balanced`` (B, T) marks, or
        over all of them without it."""
        B, T, H = x.shape
        flat = x.reshape(B * T, H)  # (N, H)
        scores, weights, ids = self.route(flat)
        if self.training and self.aux_loss_alpha > 0 and torch.is_grad_enabled():
            self.aux_loss = self._seq_aux_loss(scores.view(B, T, -1), ids.view(B, T, -1),
                                               balanced)
        base = residual.reshape(B * T, H) if residual is not None else None  # (N, H)
        mode = self._mode(flat)
        if mode in ("sets", "fused"):
            on_copies = (self._sets if mode == "sets" else self._fused)(flat, weights, ids, base)
            if on_copies is not None:
                return on_copies.view(B, T, H)
            mode = self._mode(flat, fp16=False)  # no fp16 copies here
        if self.shared is not None:
            base = self.shared(flat, base)  # (N, H): residual + shared experts
        if mode == "few" and x.dtype == torch.float32:
            # The routed experts add into the output in place: no zeros, casts or sums.
            if base is None:
                out = flat.new_zeros(B * T, H)
            else:  # a new tensor from the shared experts; else never write into the caller's
                out = base if self.shared is not None else base.clone()
            return self._few(flat, weights, ids, out).view(B, T, H)
        routed = self._run_experts(flat, weights, ids, mode).to(x.dtype)  # (N, H)
        out = routed if base is None else routed + base
        return out.view(B, T, H)

    def _seq_aux_loss(self, scores: Tensor, ids: Tensor, balanced: Tensor | None = None
                      ) -> Tensor:
        """DeepSeek-V2 ``seq_aux``: per sequence, expert load × mean router score, summed;
        over the steps ``balanced`` (B, T) marks when given (a row's count of them is its
        length), else over all ``T``."""
        B, T, E = scores.shape
        load = torch.zeros(B, E, device=scores.device, dtype=scores.dtype)
        if balanced is None:
            ones = torch.ones_like(ids, dtype=scores.dtype).view(B, -1)
            load.scatter_add_(1, ids.reshape(B, -1), ones)
            load = load / (T * self.top_k / E)  # (B, E)
            return (load * scores.mean(dim=1)).sum(dim=1).mean() * self.aux_loss_alpha
        weight = balanced.to(scores.dtype)  # (B, T)
        steps = weight.sum(dim=1, keepdim=True)  # (B, 1)
        load.scatter_add_(1, ids.reshape(B, -1),
                          weight[:, :, None].expand(ids.shape).reshape(B, -1))
        load = load / (steps * (self.top_k / E))  # (B, E)
        mean_scores = (scores * weight[:, :, None]).sum(dim=1) / steps  # (B, E)
        return (load * mean_scores).sum(dim=1).mean() * self.aux_loss_alpha

    # ------------------------------------------------------------------ experts

    def _mode(self, x: Tensor, fp16: bool = True) -> Dispatch:
        """The inference path for ``x`` (N, H): ``dispatch``, or by token count for ``auto``.

        On CPU a host sync is free and copies cost bandwidth: with fp16 copies, the chosen
        experts' or every expert's two products (``sets``, ``fused``; ``fp16=False`` skips
        them), else run the used experts. On CUDA
        avoid syncs: gather few experts, or run all of them, until the batch is large
        enough for sorting by expert to pay. With gradients: always ``grouped``.
        """
        N = x.shape[0]
        if torch.is_grad_enabled() and needs_grad(list(self.experts.parameters())):
            return "grouped"
        if self.dispatch != "auto" and (fp16 or self.dispatch not in ("sets", "fused")):
            return self.dispatch
        if x.device.type != "cuda":
            if fp16 and HalfLinear.enabled and x.dtype == torch.float32:  # where copies apply
                path = self._auto_copy_path(N)
                if path is not None:
                    return path
            if N * self.top_k <= 8:
                return "few"
            return "dense" if N * self.n_experts <= self.cpu_dense_max_products else "grouped"
        if 2 * N * self.top_k < self.n_experts:
            return "gather"
        if self.dense_max_tokens >= N or torch.cuda.is_current_stream_capturing():
            return "dense"  # a CUDA graph cannot hold grouped's host sync
        return "grouped"

    def _auto_copy_path(self, tokens: int) -> CopyPath | None:
        """The copy path ``auto`` takes for ``tokens`` fp32 tokens on CPU, if any."""
        if self.cpu_set_max_tokens >= tokens and (
            math.comb(self.n_experts, self.top_k) <= self.cpu_max_expert_sets
        ):
            return "sets"
        if self.cpu_fused_max_tokens >= tokens and self.n_experts <= 4 * self.top_k:
            return "fused"  # not where most experts sit idle (the official 64)
        return None

    def copy_path(self, tokens: int) -> CopyPath | None:
        """The fp16-copy path this layer takes for ``tokens`` fp32 tokens on CPU without
        gradients — ``sets`` or ``fused`` — or ``None`` where it takes another."""
        if self.dispatch in ("sets", "fused"):
            return cast(CopyPath, self.dispatch)
        if self.dispatch != "auto" or not HalfLinear.enabled:
            return None
        return self._auto_copy_path(tokens)

    def copies(self, path: CopyPath) -> dict[tuple[int, ...], tuple[Any, Any]] | None:
        """The fp16 copies ``path`` multiplies by, made now if need be, by sorted expert ids:
        every set of ``experts_per_token`` experts (``sets``) or all experts (``fused``),
        each as its packed :meth:`expert_set_weights` (gate|up, then down; the shared
        experts included). ``None`` where fp16 cannot hold the weights, or for ``sets``
        with more than ``cpu_max_expert_sets`` sets (made only as tokens use them)."""
        sources = self._copy_sources()
        if path == "fused":
            experts = tuple(range(self.n_experts))
            made = {experts: self._set_copy(experts, sources)}
        elif math.comb(self.n_experts, self.top_k) <= self.cpu_max_expert_sets:
            made = self._prepare_sets(sources)
        else:
            return None
        if any(gate_up is None or down is None for gate_up, down in made.values()):
            return None
        return made

    def forward_on_copies(
        self,
        path: CopyPath,
        copies: dict[tuple[int, ...], tuple[Any, Any]],
        x: Tensor,
        residual: Tensor | None,
    ) -> Tensor:
        """``residual + moe(x)`` for ``x`` (N, H) on ``copies`` from :meth:`copies`, taken
        earlier: the ``path`` the module would run, without checking the copies again."""
        _, weights, ids = self.route(x)
        run = self._sets if path == "sets" else self._fused
        out = run(x, weights, ids, residual, copies)
        assert out is not None  # every copy is given
        return out

    def _run_experts(self, x: Tensor, weights: Tensor, ids: Tensor, mode: Dispatch) -> Tensor:
        """The routed experts' weighted sum for ``x`` (N, H) by ``mode``, in fp32."""
        if torch.is_grad_enabled() and needs_grad(list(self.experts.parameters())):
            if self.train_dispatch == "dense":
                return self._dense_trainable(x, weights, ids)
            return self._grouped(x, weights, ids, packed=False)
        if mode == "few":
            return self._few(x, weights, ids, x.new_zeros(x.shape, dtype=torch.float32))
        if mode == "gather":
            return self._gather(x, weights, ids)
        if mode == "dense":
            return self._dense(x, weights, ids)
        return self._grouped(x, weights, ids, packed=True)

    def _grouped(self, x: Tensor, weights: Tensor, ids: Tensor, packed: bool) -> Tensor:
        """Sort (token, expert) pairs by expert; run each used expert once on its tokens.

        ``packed`` runs the experts on the packed views (inference); otherwise through the
        expert modules, so autograd reaches their parameters.
        """
        N, k = ids.shape
        flat_ids = ids.reshape(-1)  # (N·k,)
        order = torch.argsort(flat_ids, stable=True)  # pairs grouped by expert
        counts = torch.bincount(flat_ids, minlength=self.n_experts).tolist()
        flat_w = weights.reshape(-1)  # (N·k,)
        out = torch.zeros(N, x.shape[1], device=x.device, dtype=torch.float32)
        gate_up, down = (self._gate_up.get(), self._down.get()) if packed else (None, None)
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            pairs = order[start : start + count]
            start += count
            tokens = pairs // k  # (count,)
            if gate_up is not None and down is not None:
                half_gu, half_down = self._halves[e]
                g, u = half_gu(x[tokens], gate_up[e]).chunk(2, dim=-1)  # (count, I) each
                y = half_down(F.silu(g) * u, down[e])  # (count, H)
            else:
                y = self.experts[e](x[tokens])  # (count, H)
            out.index_add_(0, tokens, y.float() * flat_w[pairs, None])
        return out

    def _few(self, x: Tensor, weights: Tensor, ids: Tensor, out: Tensor) -> Tensor:
        """A handful of (token, expert) pairs on CPU: plain mat-vecs on the packed views,
        each added into ``out`` (N, H), weighted, in place (``addmm_``); returns ``out``."""
        gate_up, down = self._gate_up.get(), self._down.get()
        for n, (experts, ws) in enumerate(zip(ids.tolist(), weights.tolist(), strict=True)):
            xn, on = x[n : n + 1], out[n : n + 1]  # (1, H) each
            for e, w in zip(experts, ws, strict=True):
                half_gu, half_down = self._halves[e]
                g, u = half_gu(xn, gate_up[e]).chunk(2, dim=-1)  # (1, I) each
                h = F.silu(g).mul_(u)  # (1, I)
                y = half_down.fp16_product(h, down[e])
                if y is not None:
                    on.add_(y, alpha=w)
                elif h.dtype == out.dtype:
                    on.addmm_(h, down[e].t(), alpha=w)  # (1, H) += w · h @ downᵀ
                else:  # bf16 experts: their output is summed in fp32
                    on.add_(F.linear(h, down[e]).float(), alpha=w)
        return out

    def _fused(
        self, x: Tensor, weights: Tensor, ids: Tensor, residual: Tensor | None,
        copies: dict[tuple[int, ...], tuple[Any, Any]] | None = None,
    ) -> Tensor | None:
        """``residual +`` routed and shared experts for ``x`` (N, H): every expert in two
        products on fp16 copies (``copies`` when given, else checked and made here), or
        ``None`` where those copies do not apply
        (:class:`~opticmem.encoder.half_linear.HalfLinear`)."""
        experts = tuple(range(self.n_experts))
        gate = self.gate_matrix(weights, ids)
        if copies is not None:
            return self.mix_on_copies(x, copies[experts], gate, residual)
        return self._on_copies(x, experts, gate, residual)

    def _sets(
        self, x: Tensor, weights: Tensor, ids: Tensor, residual: Tensor | None,
        copies: dict[tuple[int, ...], tuple[Any, Any]] | None = None,
    ) -> Tensor | None:
        """:meth:`_fused` with each token's own experts only, token by token."""
        rows = []
        for n, (experts, ws) in enumerate(zip(ids.tolist(), weights.tolist(), strict=True)):
            order = sorted(range(len(experts)), key=experts.__getitem__)
            chosen = tuple(experts[i] for i in order)
            gate = [ws[i] for i in order]
            residual_n = None if residual is None else residual[n : n + 1]
            row = (self._on_copies(x[n : n + 1], chosen, gate, residual_n) if copies is None
                   else self.mix_on_copies(x[n : n + 1], copies[chosen], gate, residual_n))
            if row is None:
                return None
            rows.append(row)
        return rows[0] if len(rows) == 1 else torch.cat(rows)

    def _on_copies(
        self,
        x: Tensor,
        experts: tuple[int, ...],
        gate: Tensor | list[float],
        residual: Tensor | None,
    ) -> Tensor | None:
        """:meth:`mix_on_copies` over ``experts`` (sorted ids), their copies checked (and
        made if need be) first; ``None`` where the copies do not apply."""
        sources = self._copy_sources()  # [gate_up (E, 2I, H), down, shared…]
        halves = self._set_halves.get(experts)
        if halves is None:
            halves = self._set_halves[experts] = (HalfLinear(), HalfLinear())
            if len(experts) < self.n_experts and (  # the first set: make them all now
                math.comb(self.n_experts, self.top_k) <= self.cpu_max_expert_sets
            ):
                self._prepare_sets(sources)
        gate_up = halves[0].copy_for_input(x, sources, partial(self._set_gate_up, experts))
        if gate_up is None:  # not this input (rows, dtype, device) or not these weights
            return None
        down = halves[1].prepare(sources, partial(self._set_down, experts))
        if down is None:
            return None
        return self.mix_on_copies(x, (gate_up, down), gate, residual)

    def mix_on_copies(
        self, x: Tensor, copies: tuple[Any, Any], gate: Tensor | list[float],
        residual: Tensor | None,
    ) -> Tensor:
        """``residual + Σ gate·expert(x) + shared(x)`` for ``x`` (N, H) in two fp16
        products over one set's ``copies`` (gate|up, down; :meth:`expert_set_weights`);
        ``gate`` is (N, experts in the set) or, for one token, a float per expert."""
        linear = torch.ops.quantized.linear_dynamic_fp16
        g, u = linear(x, copies[0]).chunk(2, dim=-1)  # (N, k·I + Is) each
        h = F.silu(g).mul_(u)
        width = self.expert_width
        if isinstance(gate, list):
            for i, w in enumerate(gate):
                h[:, i * width : (i + 1) * width].mul_(w)
        else:  # in place on the experts' slice of h
            n = gate.shape[1]
            h[:, : n * width].view(x.shape[0], n, width).mul_(gate[..., None])
        out = linear(h, copies[1])
        return out if residual is None else out.add_(residual)

    def _copy_sources(self) -> list[Tensor]:
        """What :meth:`expert_set_weights` reads: a change to any remakes the copies."""
        sources = [self._gate_up.get(), self._down.get()]
        if self.shared is not None:
            sources += [self.shared.gate_up(), self.shared.down_proj.weight]
        return sources

    def _prepare_sets(self, sources: list[Tensor]) -> dict[tuple[int, ...], tuple[Any, Any]]:
        """Make the copies of every set of ``experts_per_token`` experts at once: a page
        routes its tokens through all of them (the bundled codec's 15 at every layer), and
        made together they cost the first token (0.26 s for the bundled codec's 45 on a
        2-vCPU EPYC) instead of a spread of later ones. Returns each set's two copies
        (``None`` where fp16 cannot hold its weights); copies already current are kept."""
        lent: dict[str, Tensor] = {}  # each set's fp32 matrices, written over by the next
        return {experts: self._set_copy(experts, sources, lent)
                for experts in itertools.combinations(range(self.n_experts), self.top_k)}

    def _set_copy(
        self, experts: tuple[int, ...], sources: list[Tensor],
        lent: dict[str, Tensor] | None = None,
    ) -> tuple[Any, Any]:
        """The two copies of ``experts``' set (gate|up, down), made if need be (``lent``: as
        for :meth:`_set_gate_up`); each ``None`` where fp16 cannot hold it."""
        halves = self._set_halves.setdefault(experts, (HalfLinear(), HalfLinear()))
        return (halves[0].prepare(sources, partial(self._set_gate_up, experts, lent)),
                halves[1].prepare(sources, partial(self._set_down, experts, lent)))

    def expert_set_weights(self, experts: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The weights of ``experts`` (routed expert ids) and the shared experts as two
        matrices: ``(2·(k·I + Is), H)``, the chosen experts' gate rows in the given order,
        the shared experts' gate rows, then the up rows in the same order; and
        ``(H, k·I + Is)``, the down columns in that order. So ``silu(gate)·up`` of the first
        product is the second product's input as it comes, and each expert's slice of it
        can be weighted in place."""
        return self._set_gate_up(experts)[0], self._set_down(experts)[0]

    def _set_gate_up(
        self, experts: Sequence[int], lent: dict[str, Tensor] | None = None
    ) -> WeightAndBias:
        """The first matrix of :meth:`expert_set_weights`, without a bias. With ``lent``,
        written into the memory its ``"gate_up"`` holds (made on first use): the copies are
        packed from it and keep none of it, and 90 matrices made and freed between the
        copies' own allocations left ~30 MB the allocator kept."""
        gate_up = self._gate_up.get()  # (E, 2I, H)
        halves = [gate_up[e].chunk(2) for e in experts]  # views: one copy, by the cat below
        if self.shared is not None:
            halves.append(self.shared.gate_up().chunk(2))
        parts = [gate for gate, _ in halves] + [up for _, up in halves]
        return _concatenate(parts, 0, lent, "gate_up"), None

    def _set_down(
        self, experts: Sequence[int], lent: dict[str, Tensor] | None = None
    ) -> WeightAndBias:
        """The second matrix of :meth:`expert_set_weights`, without a bias (``lent``: as
        for :meth:`_set_gate_up`)."""
        down = self._down.get()  # (E, H, I)
        downs = [down[e] for e in experts]  # views: one copy, by the cat below
        if self.shared is not None:
            downs.append(self.shared.down_proj.weight)
        return _concatenate(downs, 1, lent, "down"), None

    def _gather(self, x: Tensor, weights: Tensor, ids: Tensor) -> Tensor:
        """Gather only the selected experts' weights: (N, k) batched mat-vecs."""
        gate_up, down = self._gate_up.get(), self._down.get()
        I2 = gate_up.shape[1]
        w_gu = gate_up[ids]  # (N, k, 2I, H)
        w_dn = down[ids]  # (N, k, H, I)
        h = torch.matmul(w_gu, x[:, None, :, None])  # (N, k, 2I, 1)
        g, u = h.split(I2 // 2, dim=2)
        y = torch.matmul(w_dn, F.silu(g) * u)[..., 0]  # (N, k, H)
        return torch.matmul(weights[:, None, :], y.float())[:, 0]  # (N, 1, k)@(N, k, H) → (N, H)

    def _dense(self, x: Tensor, weights: Tensor, ids: Tensor) -> Tensor:
        """Every expert on every token in two batched matmuls; unselected ones weigh 0."""
        gate_up, down = self._gate_up.get(), self._down.get()
        I2 = gate_up.shape[1]
        h = torch.matmul(x, gate_up.transpose(1, 2))  # (E, N, 2I)
        g, u = h.split(I2 // 2, dim=-1)
        y = torch.matmul(F.silu(g) * u, down.transpose(1, 2))  # (E, N, H)
        return torch.einsum("enh,ne->nh", y.float(), self.gate_matrix(weights, ids))  # (N, H)

    def _dense_trainable(self, x: Tensor, weights: Tensor, ids: Tensor) -> Tensor:
        """``dense`` on the expert modules' own parameters, which autograd reaches: one
        matmul onto every expert's gate|up rows, the activations scaled by their gates, one
        matmul back through every expert's down columns, which sums over the experts."""
        N, E, width = x.shape[0], self.n_experts, self.expert_width
        experts = self.expert_list()
        gate_up = torch.cat([w for e in experts for w in (e.gate_proj.weight, e.up_proj.weight)])
        down = torch.cat([e.down_proj.weight for e in experts], dim=1)  # (H, E·I)
        g, u = F.linear(x, gate_up).view(N, E, 2, width).unbind(2)  # (N, E, I) each
        h = F.silu(g) * u * self.gate_matrix(weights, ids).to(g.dtype)[..., None]
        return F.linear(h.reshape(N, E * width), down).float()  # (N, H)

    def gate_matrix(self, weights: Tensor, ids: Tensor) -> Tensor:
        """Each token's routing weight for every expert, 0 where unselected: (N, E) fp32
        from ``weights`` and ``ids`` (N, k)."""
        gates = torch.zeros(ids.shape[0], self.n_experts, device=ids.device, dtype=torch.float32)
        return gates.scatter_(1, ids, weights.float())

    # ------------------------------------------------------------------ packing

    def expert_list(self) -> list[MLP]:
        """The routed experts, typed."""
        return [cast(MLP, e) for e in self.experts]

    def packed(self) -> tuple[Tensor, Tensor]:
        """Stacked ``(E, 2I, H)`` gate|up and ``(E, H, I)`` down weights (parameter views)."""
        return self._gate_up.get(), self._down.get()


def _concatenate(parts: list[Tensor], dim: int, lent: dict[str, Tensor] | None,
                 name: str) -> Tensor:
    """``torch.cat(parts, dim)``, into ``lent[name]`` when ``lent`` is given (kept there
    for the next call)."""
    if lent is None:
        return torch.cat(parts, dim=dim)
    out = lent.get(name)
    if out is None:
        out = lent[name] = torch.cat(parts, dim=dim)
    else:
        torch.cat(parts, dim=dim, out=out)
    return out
