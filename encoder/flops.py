"""Analytic FLOP counts of the DeepEncoder and the decoder, for model-FLOPs utilisation.

Counts matmul and convolution work only (a multiply-add is 2 FLOPs); norms, softmax and
activations are negligible at these sizes. Attention is counted as the model defines it
(``QKᵀ`` and ``AV`` with the real head width), not as the kernels run it: the extra head
dims that :func:`opticmem.encoder.sam.augmented_attention` adds to fold in relative
positions are implementation overhead, so they lower measured MFU rather than raise it.
SAM's windowed blocks compute attention on the zero-padded grid, as the reference does.

>>> from opticmem.encoder.config import preset
>>> round(encoder_flops(preset("official"), 1024) / 1e12, 2)  # one Base page, TFLOP
1.14
"""

from __future__ import annotations

import math

from opticmem.encoder.config import ModelConfig


def sam_flops(cfg: ModelConfig, pixels: int) -> int:
    """SAM stage + neck for one ``pixels``-square image."""
    s = cfg.sam
    P = pixels // s.patch_size
    T = P * P
    C = s.width
    flops = 2 * T * (3 * s.patch_size**2) * C  # patch conv
    for i in range(s.depth):
        if i in s.global_attn_indexes:
            t_attn, span, windows = T, T, 1
            rel = 2 * T * (P + P) * C  # q · rel_h, q · rel_w
        else:
            w = s.window_size
            padded = math.ceil(P / w) * w
            t_attn, span, windows = padded * padded, w * w, (padded // w) ** 2
            rel = 2 * t_attn * (w + w) * C
        flops += 2 * t_attn * C * 3 * C + 2 * t_attn * C * C  # qkv, proj
        flops += windows * 4 * span * span * C  # QKᵀ and AV over all heads
        flops += rel
        flops += 2 * T * C * s.mlp_dim * 2  # MLP
    n = s.neck_channels
    flops += 2 * T * C * n + 2 * T * n * n * 9  # neck convs
    return flops


def compressor_flops(cfg: ModelConfig, pixels: int) -> int:
    """The two stride-2 3×3 convs."""
    P = pixels // cfg.sam.patch_size
    k = cfg.compressor
    return 2 * (P // 2) ** 2 * cfg.sam.neck_channels * k.mid_channels * 9 + 2 * (
        P // 4
    ) ** 2 * k.mid_channels * k.out_channels * 9


def clip_flops(cfg: ModelConfig, pixels: int) -> int:
    """CLIP stage on the compressed grid (CLS included)."""
    c = cfg.clip
    g = pixels // 64
    T = g * g + 1
    per_layer = 2 * T * (4 * c.width * c.width + 2 * c.width * c.mlp_dim) + 4 * T * T * c.width
    return c.depth * per_layer


def encoder_flops(cfg: ModelConfig, pixels: int) -> int:
    """DeepEncoder FLOPs for one image: SAM, compressor, CLIP and projector."""
    g = pixels // 64
    projector = 2 * g * g * cfg.vision_dim * cfg.embed_dim
    return (
        sam_flops(cfg, pixels)
        + compressor_flops(cfg, pixels)
        + clip_flops(cfg, pixels)
        + projector
    )


def decoder_flops_per_token(cfg: ModelConfig, context: int) -> int:
    """Decoder FLOPs for one token attending to ``context`` positions (active experts only)."""
    d = cfg.decoder
    H, inner = d.hidden_size, d.heads * d.head_dim
    flops = 0
    for i in range(d.layers):
        flops += 2 * H * inner * 4  # q, k, v, o
        flops += 4 * context * inner  # QKᵀ and AV
        if d.is_moe_layer(i):
            flops += 2 * H * d.routed_experts  # router
            active = d.experts_per_token * d.moe_intermediate + d.shared_intermediate
            flops += 2 * H * active * 3
        else:
            flops += 2 * H * d.dense_intermediate * 3
    return flops + 2 * H * d.vocab_size  # LM head
