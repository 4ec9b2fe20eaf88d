"""The SAM-style "perception" ViT: patch embedding, windowed attention, a conv neck.

Reads like Segment Anything's image encoder, which DeepEncoder reuses at SAM-base size:
a 16-pixel patch conv, an absolute position embedding interpolated to the input grid,
blocks that attend inside 14×14 windows except a few global ones, each with decomposed
relative position bias, then a conv neck. Sizes come from :class:`SamConfig`.

The relative-position bias ``rel_h[q, kh] + rel_w[q, kw]`` takes one of two forms
(``SamAttention.impl``; ``"auto"`` picks per block, from the measurements in
``benchmarks/results/sam_attention_h200.md``):

* ``"bias"``, the reference's: an explicit additive ``(T, T)`` mask. Fused kernels (cuDNN
  on Hopper) take it, and on 14×14 windows it is the fastest form on GPU and CPU alike,
  but the mask grows with T², 12.9 GB for a batch of 32 Base pages in a global block.
* ``"augment"``: the bias is an inner product of ``[rel_h[q], rel_w[q]]`` with the one-hot
  coordinates of key ``k``, so it rides along the query/key dot product in extra head
  dimensions (:func:`augmented_attention`) and no mask is materialised, at any grid size.
  ``"augment-narrow"`` keeps the values at their own width, which the cuDNN kernel accepts
  (and is faster with) but the CPU kernels do not.

``"auto"``: windowed blocks use ``"bias"``; global blocks ``"augment-narrow"`` on CUDA and
``"augment"`` elsewhere.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opticmem.encoder.config import SamConfig

AttentionForm = Literal["auto", "augment", "augment-narrow", "bias"]
ATTENTION_FORMS: tuple[AttentionForm, ...] = get_args(AttentionForm)


def window_partition(x: Tensor, window: int) -> tuple[Tensor, tuple[int, int]]:
    """Cut ``x`` (B, H, W, C) into windows (B·nW, window, window, C).

    H and W are zero-padded up to a multiple of ``window`` first; the padded size
    ``(Hp, Wp)`` is returned for :func:`window_unpartition`.
    """
    B, H, W, C = x.shape
    pad_h = (window - H % window) % window
    pad_w = (window - W % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window, window, Wp // window, window, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, C)  # (B·nW, ws, ws, C)
    return windows, (Hp, Wp)


def window_unpartition(
    windows: Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """Inverse of :func:`window_partition`: (B·nW, ws, ws, C) → (B, H, W, C), padding dropped."""
    Hp, Wp = padded
    H, W = size
    B = windows.shape[0] // ((Hp // window) * (Wp // window))
    x = windows.view(B, Hp // window, Wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)  # (B, Hp, Wp, C)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :].contiguous()
    return x


def rel_pos_table(q_size: int, k_size: int, rel_pos: Tensor) -> Tensor:
    """Relative position embeddings for every (query, key) coordinate pair: (q, k, C).

    ``rel_pos`` (L, C) holds one embedding per offset; when L differs from
    ``2·max(q, k) − 1`` it is linearly interpolated to that length first (SAM semantics).
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        resized = F.interpolate(
            rel_pos.float().t().unsqueeze(0), size=length, mode="linear"
        )  # (1, C, length)
        rel_pos = resized[0].t().to(rel_pos.dtype)  # (length, C)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[offsets.long()]  # (q, k, C)


def augmented_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    rel_h: Tensor,
    rel_w: Tensor,
    scale: float,
    *,
    pad_values: bool = True,
) -> Tensor:
    """Attention with a decomposed relative-position bias folded into the dot product.

    q, k, v: (B, nh, H·W, hd); rel_h: (B, nh, H·W, H) and rel_w: (B, nh, H·W, W), the bias
    of each query towards key row ``kh`` and key column ``kw``. Returns (B, nh, H·W, hd).

    ``scale·q·k + rel_h[q, kh] + rel_w[q, kw] = [scale·q, rel_h[q], rel_w[q]] ·
    [k, onehot(kh), onehot(kw)]``, so one SDPA call with ``scale=1`` computes it exactly.
    Head dims are zero-padded to a multiple of 8; the padding contributes zero. With
    ``pad_values`` v is zero-padded to the same width, which the flash kernel needs;
    without, v keeps its own width and the cuDNN or memory-efficient kernels run it.
    """
    B, nh, T, hd = q.shape
    H, W = rel_h.shape[-1], rel_w.shape[-1]
    eye_h = torch.eye(H, device=q.device, dtype=q.dtype)
    eye_w = torch.eye(W, device=q.device, dtype=q.dtype)
    onehot = torch.cat(
        [eye_h.repeat_interleave(W, dim=0), eye_w.repeat(H, 1)], dim=-1
    )  # (H·W, H+W): key (kh, kw) → [onehot(kh), onehot(kw)]
    dim = hd + H + W
    pad = (-dim) % 8
    q_aug = torch.cat([q * scale, rel_h, rel_w], dim=-1)  # (B, nh, T, hd+H+W)
    k_aug = torch.cat([k, onehot.expand(B, nh, T, H + W)], dim=-1)  # (B, nh, T, hd+H+W)
    if pad:
        q_aug = F.pad(q_aug, (0, pad))
        k_aug = F.pad(k_aug, (0, pad))
    if not pad_values:
        return F.scaled_dot_product_attention(q_aug, k_aug, v, scale=1.0)  # (B, nh, T, hd)
    v_aug = F.pad(v, (0, dim + pad - hd))  # (B, nh, T, dim+pad)
    out = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, scale=1.0)
    return out[..., :hd]  # (B, nh, T, hd)


class SamAttention(nn.Module):
    """Multi-head self-attention over a (H, W) token grid with decomposed relative positions."""

    impl: AttentionForm = "auto"

    def __init__(self, dim: int, heads: int, rel_size: int, *, windowed: bool = False) -> None:
        super().__init__()
        self.windowed = windowed
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        # One embedding per relative offset, 2·size−1 of them (27 in a 14-window).
        self.rel_pos_h = nn.Parameter(torch.zeros(rel_size, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(rel_size, self.head_dim))

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        nh, hd = self.heads, self.head_dim
        qkv = self.qkv(x).reshape(B, H * W, 3, nh, hd).permute(2, 0, 3, 1, 4)  # (3, B, nh, HW, hd)
        q, k, v = qkv.unbind(0)  # each (B, nh, HW, hd)
        Rh = rel_pos_table(H, H, self.rel_pos_h).to(q.dtype)  # (H, H, hd)
        Rw = rel_pos_table(W, W, self.rel_pos_w).to(q.dtype)  # (W, W, hd)
        r_q = q.reshape(B, nh, H, W, hd)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, Rh)  # (B, nh, H, W, H)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, Rw)  # (B, nh, H, W, W)
        impl = self.impl
        if impl == "auto":
            impl = "bias" if self.windowed else "augment-narrow" if q.is_cuda else "augment"
        if impl == "bias":
            bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, nh, H * W, H * W)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            out = augmented_attention(
                q, k, v, rel_h.reshape(B, nh, H * W, H), rel_w.reshape(B, nh, H * W, W),
                self.scale, pad_values=impl == "augment",
            )
        out = out.transpose(1, 2).reshape(B, H, W, C)  # (B, H, W, C)
        return self.proj(out)


class SamMLP(nn.Module):
    """Two linears with exact GELU (SAM's ``MLPBlock``; official names ``lin1``/``lin2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SamBlock(nn.Module):
    """Pre-norm transformer block; attends inside ``window``-sized windows, or globally if 0."""

    def __init__(self, cfg: SamConfig, window: int, grid: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        rel_size = 2 * (window or grid) - 1
        self.attn = SamAttention(cfg.width, cfg.heads, rel_size, windowed=window > 0)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = SamMLP(cfg.width, cfg.mlp_dim)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, H, W, C)
        shortcut = x
        x = self.norm1(x)
        if self.window > 0:
            H, W = x.shape[1], x.shape[2]
            x, padded = window_partition(x, self.window)  # (B·nW, ws, ws, C)
            x = self.attn(x)
            x = window_unpartition(x, self.window, padded, (H, W))  # (B, H, W, C)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class SamNeck(nn.Module):
    """1×1 conv → LayerNorm2d → 3×3 conv → LayerNorm2d, no biases on the convs."""

    def __init__(self, width: int, channels: int, eps: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, channels, kernel_size=1, bias=False)
        self.norm1 = LayerNorm2d(channels, eps)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = LayerNorm2d(channels, eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm2(self.conv2(self.norm1(self.conv1(x))))


def embed_patches(pixels: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv`` (stride = kernel = p) over ``pixels`` (B, c, H, W), as (B, H/p, W/p, C).

    A non-overlapping patch convolution is one linear map of each flattened patch, so it
    runs here as a GEMM with K = c·p². cuDNN runs the convolution itself with a slow
    fallback kernel, 3 input channels fitting none of its tensor-core tiles: 7.7% of the
    compiled official encoder's time at Base on an H200
    (``benchmarks/results/encoder_profile_h200.md``). Rows and columns past the last whole
    patch are dropped, as the convolution drops them.
    """
    p = conv.stride[0]
    B, c, H, W = pixels.shape
    gh, gw = H // p, W // p
    x = pixels[:, :, : gh * p, : gw * p].reshape(B, c, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5).reshape(B, gh, gw, c * p * p)  # patch (c, i, j) order
    return F.linear(x, conv.weight.reshape(conv.out_channels, -1), conv.bias)


def interpolate_grid(pos: Tensor, size: int) -> Tensor:
    """Resize a (1, G, G, C) position grid to (1, size, size, C): bicubic, antialiased, in fp32."""
    if pos.shape[1] == size:
        return pos
    grid = pos.permute(0, 3, 1, 2).float()  # (1, C, G, G)
    grid = F.interpolate(
        grid, size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    return grid.to(pos.dtype).permute(0, 2, 3, 1)  # (1, size, size, C)


class SamEncoder(nn.Module):
    """Pixels (B, 3, S, S) → neck features (B, neck_channels, S/16, S/16)."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(
            3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=True
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_grid, cfg.pos_grid, cfg.width))
        self.blocks = nn.ModuleList(
            SamBlock(cfg, 0 if i in cfg.global_attn_indexes else cfg.window_size, cfg.pos_grid)
            for i in range(cfg.depth)
        )
        self.neck = SamNeck(cfg.width, cfg.neck_channels, cfg.norm_eps)

    def forward(self, pixels: Tensor) -> Tensor:
        x = embed_patches(pixels, self.patch_embed)  # (B, g, g, C)
        x = x + interpolate_grid(self.pos_embed, x.shape[1])
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))  # (B, neck, g, g)
