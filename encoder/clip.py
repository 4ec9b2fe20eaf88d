"""The CLIP-style "knowledge" ViT, run on the compressed SAM grid instead of pixels.

DeepEncoder removes CLIP's first layer: the compressor's ``(B, C, g, g)`` map is flattened
and used as the patch embeddings. A CLS token is prepended, the position embedding
(stored for a 16×16 grid + CLS) is bicubic-interpolated to ``g×g`` + CLS, a pre-LayerNorm is
applied, then pre-norm blocks with a fused ``qkv`` projection and quick-GELU MLPs. There is
no post-LayerNorm. The output keeps the CLS token; the DeepEncoder drops it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opticmem.encoder.config import ClipConfig


def quick_gelu(x: Tensor) -> Tensor:
    """CLIP's sigmoid approximation of GELU: ``x·σ(1.702·x)``."""
    return x * torch.sigmoid(1.702 * x)


class ClipAttention(nn.Module):
    """Dense multi-head self-attention with one fused ``qkv`` projection (q, k, v in order)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim)  # (B, T, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, T, hd)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hd)
        return self.proj(out.transpose(1, 2).reshape(B, T, C))


class ClipMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class ClipBlock(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-5 in the official model)."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.attn = ClipAttention(cfg.width, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.mlp = ClipMLP(cfg.width, cfg.mlp_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def interpolate_positions(pos: Tensor, grid: int) -> Tensor:
    """(1 + G², C) CLS-first position table → (1 + grid², C), bicubic+antialias in fp32."""
    cls, table = pos[:1], pos[1:]
    src = round(table.shape[0] ** 0.5)
    if src == grid:
        return pos
    C = pos.shape[-1]
    table = table.reshape(1, src, src, C).permute(0, 3, 1, 2).float()  # (1, C, G, G)
    table = F.interpolate(
        table, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False
    )
    table = table.to(pos.dtype).permute(0, 2, 3, 1).reshape(grid * grid, C)  # (grid², C)
    return torch.cat([cls, table], dim=0)  # (1 + grid², C)


class ClipEncoder(nn.Module):
    """Compressed grid (B, C, g, g) → token features (B, 1 + g², C), CLS first."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.class_embedding = nn.Parameter(torch.zeros(cfg.width))
        # CLIP's own pixel patch conv: never run here; kept only when a checkpoint has it.
        self.patch_embedding: nn.Conv2d | None = (
            nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
            if cfg.keep_patch_embedding
            else None
        )
        self.position_embedding = nn.Parameter(torch.zeros(cfg.pos_grid**2 + 1, cfg.width))
        self.pre_norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.blocks = nn.ModuleList(ClipBlock(cfg) for _ in range(cfg.depth))

    def forward(self, patches: Tensor) -> Tensor:
        B, C, g, _ = patches.shape
        x = patches.flatten(2).transpose(1, 2)  # (B, g², C)
        cls = self.class_embedding.to(x.dtype).expand(B, 1, C)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + g², C)
        x = x + interpolate_positions(self.position_embedding, g).to(x.dtype)
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)
        return x  # (B, 1 + g², C)
