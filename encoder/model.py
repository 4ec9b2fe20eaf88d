"""The whole model: DeepEncoder + MoE decoder, joined at the ``<image>`` positions.

A decoder input is ``[bos] + <image>·slots + prompt``; :meth:`OCRModel.embed_inputs`
embeds the ids and writes the vision slots over the ``<image>`` positions in order
(``masked_scatter``), then adds optional ``extra_embeds`` — a training hook for features
aligned with the sequence (e.g. layout), off unless given.

>>> import torch
>>> from opticmem.encoder.config import preset
>>> model = OCRModel(preset("test")).eval()
>>> grid = model.encode_grid(torch.zeros(1, 3, 512, 512))
>>> tuple(grid.shape), tuple(model.grid_to_slots(grid).shape)
((1, 8, 8, 64), (1, 73, 64))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from opticmem.encoder.align import LayoutAligner
from opticmem.encoder.clip import ClipEncoder
from opticmem.encoder.config import ModelConfig
from opticmem.encoder.decoder import MoEDecoder, RMSNorm
from opticmem.encoder.deepencoder import DeepEncoder
from opticmem.encoder.errors import InputError
from opticmem.encoder.sam import LayerNorm2d, SamAttention, SamEncoder


class OCRModel(nn.Module):
    """DeepSeek-OCR-style vision-language model of any :class:`ModelConfig` size."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = DeepEncoder(cfg)
        self.decoder = MoEDecoder(cfg.decoder)
        self.aligner = (
            LayoutAligner(cfg.decoder.hidden_size, cfg.align) if cfg.align is not None else None
        )

    # ------------------------------------------------------------------ vision

    def encode_grid(self, pixels: Tensor) -> Tensor:
        """Pixels (B, 3, S, S) → projected token grid (B, g, g, D), before newlines."""
        return self.vision.encode_grid(pixels)

    def grid_to_slots(self, grid: Tensor) -> Tensor:
        """(B, g, g, D) → decoder slots (B, g·(g+1)+1, D)."""
        return self.vision.grid_to_slots(grid)

    # ------------------------------------------------------------------ decoder

    def embed_inputs(
        self,
        input_ids: Tensor,
        image_slots: Tensor | None = None,
        extra_embeds: Tensor | None = None,
    ) -> Tensor:
        """Token embeddings (B, T, D) with vision slots scattered into ``<image>`` positions.

        ``image_slots`` (n, S, D) or (N, D) supplies, in order, one vector for every
        ``<image>`` id in ``input_ids`` (row-major); ``extra_embeds`` (B, T, D) is added
        afterwards.
        """
        x = self.decoder.embed_tokens(input_ids)  # (B, T, D)
        D = x.shape[-1]
        is_image = input_ids == self.cfg.decoder.image_token_id  # (B, T)
        if image_slots is not None:
            if image_slots.shape[-1] != D:
                raise InputError(f"image slots have width {image_slots.shape[-1]}, decoder {D}")
            n_ids = int(is_image.sum())
            n_slots = image_slots.numel() // D
            if n_ids != n_slots:
                raise InputError(
                    f"{n_ids} <image> positions in input_ids but {n_slots} vision slots given"
                )
            x = x.masked_scatter(is_image[..., None], image_slots.to(x.dtype))
        if extra_embeds is not None:
            if extra_embeds.shape != x.shape:
                raise InputError(
                    f"extra_embeds must be {tuple(x.shape)} (B, T, D); "
                    f"got {tuple(extra_embeds.shape)}"
                )
            x = x + extra_embeds.to(x.dtype)
        return x

    def forward(
        self,
        input_ids: Tensor,
        *,
        pixels: Tensor | None = None,
        image_slots: Tensor | None = None,
        extra_embeds: Tensor | None = None,
        position_ids: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, T, vocab) for a full sequence (training and scoring).

        Give either ``pixels`` (encoded here, one image per ``<image>`` run) or precomputed
        ``image_slots``; ``mask`` is a boolean (B, 1, T, T) "may attend" mask (default causal).
        """
        if pixels is not None:
            if image_slots is not None:
                raise InputError("give pixels or image_slots, not both")
            image_slots = self.grid_to_slots(self.encode_grid(pixels))
        x = self.embed_inputs(input_ids, image_slots, extra_embeds)
        return self.decoder.logits(self.decoder(x, position_ids=position_ids, mask=mask))

    # ------------------------------------------------------------------ init

    @torch.no_grad()
    def init_weights(self, seed: int = 0, std: float = 0.02) -> OCRModel:
        """Deterministic random initialisation (normal(0, std) matrices, unit norms).

        Independent of the global RNG: the same seed on the same device type gives the
        same weights.
        """
        device = next(self.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)

        def normal_(t: Tensor, scale: float = std) -> None:
            t.copy_(torch.randn(t.shape, generator=gen, device=device) * scale)

        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.Embedding):
                normal_(module.weight)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    bias.zero_()
            elif isinstance(module, nn.LayerNorm | LayerNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
            elif isinstance(module, SamAttention):
                module.rel_pos_h.zero_()
                module.rel_pos_w.zero_()
            elif isinstance(module, SamEncoder):
                normal_(module.pos_embed)
            elif isinstance(module, ClipEncoder):
                normal_(module.class_embedding)
                normal_(module.position_embedding)
        D = self.cfg.embed_dim
        normal_(self.vision.image_newline, 1.0 / math.sqrt(D))
        normal_(self.vision.view_separator, 1.0 / math.sqrt(D))
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(
    cfg: ModelConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = 0,
) -> OCRModel:
    """Build a model, optionally randomly initialised (``seed=None`` leaves it uninitialised).

    On ``device="meta"`` nothing is allocated (use it to count parameters of ``official``).
    """
    with torch.device("meta"):
        model = OCRModel(cfg).to(dtype=dtype)
    if str(device) == "meta":
        return model
    model = model.to_empty(device=device)
    if seed is not None:
        model.init_weights(seed)
    return model.eval()


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a torch device (``None``: :func:`default_device`); a name torch does
    not know (``"gpu"``) or CUDA on a machine without it is an :class:`InputError` here,
    not torch's bare ``RuntimeError`` from deep inside building or loading a model."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: CUDA is not available on this machine")
    return dev


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA (what the official weights are), fp32 on CPU."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
