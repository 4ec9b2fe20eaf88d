"""The 16× token compressor between the SAM and CLIP stages.

Two 3×3 convolutions with stride 2 and padding 1, no bias, norm or activation between
them: a SAM neck map of ``(B, 256, 64, 64)`` (4,096 tokens at 1024 px) becomes
``(B, 1024, 16, 16)`` (256 tokens). Official names ``net_2`` / ``net_3``.
"""

from __future__ import annotations

from torch import Tensor, nn

from opticmem.encoder.config import CompressorConfig


class Compressor(nn.Module):
    """(B, in_channels, G, G) → (B, out_channels, G/4, G/4)."""

    def __init__(self, in_channels: int, cfg: CompressorConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, cfg.mid_channels, kernel_size=3, stride=2, padding=1, bias=False
        )
        self.conv2 = nn.Conv2d(
            cfg.mid_channels, cfg.out_channels, kernel_size=3, stride=2, padding=1, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))  # (B, out, G/4, G/4)
