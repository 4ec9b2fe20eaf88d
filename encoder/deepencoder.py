"""DeepEncoder: page pixels → vision-token grid → decoder slots.

SAM stage → 16× compressor → CLIP stage on the compressed grid; the CLIP tokens (CLS
dropped) and the compressor tokens are concatenated on channels, CLIP first, and a linear
projector maps them to the decoder width. That gives the ``(B, g, g, D)`` token grid
(:meth:`DeepEncoder.encode_grid`, what :class:`~opticmem.encoder.codec.VisionTokens`
stores). In a decoder sequence each grid row is followed by the learned ``image_newline``
and the image ends with the learned ``view_separator``: ``g·(g+1)+1`` slots
(:meth:`DeepEncoder.grid_to_slots`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from opticmem.encoder.clip import ClipEncoder
from opticmem.encoder.compressor import Compressor
from opticmem.encoder.config import ModelConfig
from opticmem.encoder.errors import InputError
from opticmem.encoder.sam import SamEncoder

PIXELS_PER_TOKEN = 64
"""One vision token summarises a 64×64 pixel square (patch 16, then 4× per side)."""


def slots_for_grid(g: int) -> int:
    """Decoder slots one g×g grid occupies: a newline after every row, one separator."""
    return g * (g + 1) + 1


class DeepEncoder(nn.Module):
    """Pixels (B, 3, S, S), S a multiple of 64, → slots (B, g·(g+1)+1, D) with g = S/64."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.sam = SamEncoder(cfg.sam)
        self.compressor = Compressor(cfg.sam.neck_channels, cfg.compressor)
        self.clip = ClipEncoder(cfg.clip)
        self.projector = nn.Linear(cfg.vision_dim, D)
        self.image_newline = nn.Parameter(torch.zeros(D))
        self.view_separator = nn.Parameter(torch.zeros(D))

    def encode_grid(self, pixels: Tensor) -> Tensor:
        """Projected vision tokens before newline/separator insertion: (B, g, g, D)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise InputError(f"pixels must be (B, 3, S, S); got {tuple(pixels.shape)}")
        B, _, H, W = pixels.shape
        if H != W or H % PIXELS_PER_TOKEN or H == 0:
            raise InputError(
                f"pixels must be square with a side that is a positive multiple of "
                f"{PIXELS_PER_TOKEN}; got {H}×{W}"
            )
        sam = self.compressor(self.sam(pixels))  # (B, Ck, g, g)
        g = sam.shape[-1]
        clip = self.clip(sam)[:, 1:]  # (B, g², Cc) — CLS dropped
        fused = torch.cat([clip, sam.flatten(2).transpose(1, 2)], dim=-1)  # (B, g², Cc+Ck)
        tokens = self.projector(fused)  # (B, g², D)
        return tokens.view(B, g, g, -1)  # (B, g, g, D)

    def grid_to_slots(self, grid: Tensor) -> Tensor:
        """(B, g, g, D) → (B, g·(g+1)+1, D): a newline after each row, the separator last."""
        if grid.ndim != 4 or grid.shape[1] != grid.shape[2]:
            raise InputError(f"grid must be (B, g, g, D); got {tuple(grid.shape)}")
        B, g, _, D = grid.shape
        newline = self.image_newline.to(grid.dtype).expand(B, g, 1, D)  # (B, g, 1, D)
        rows = torch.cat([grid, newline], dim=2).reshape(B, g * (g + 1), D)  # (B, g(g+1), D)
        sep = self.view_separator.to(grid.dtype).expand(B, 1, D)  # (B, 1, D)
        return torch.cat([rows, sep], dim=1)  # (B, g(g+1)+1, D)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.grid_to_slots(self.encode_grid(pixels))
