"""One config system for every model size: frozen dataclasses and named presets.

A :class:`ModelConfig` holds a :class:`SamConfig` (the windowed "perception" ViT and its
neck), a :class:`CompressorConfig` (the two stride-2 convs), a :class:`ClipConfig` (the
global "knowledge" ViT), the projector width and a :class:`DecoderConfig` (the MoE
language model). Three presets exist:

* ``official`` — exactly the released ``deepseek-ai/DeepSeek-OCR`` checkpoint
  (3,336,106,240 parameters; see ``shared/design/deepseek-ocr-facts.md`` §1, §2).
* ``bundled`` — the ~21M-parameter model opticmem trains and ships.
* ``test`` — a tiny model of the same architecture for fast CPU tests.

>>> cfg = preset("bundled")
>>> cfg.decoder.hidden_size, cfg.vision_dim
(384, 768)
>>> ModelConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from opticmem.encoder.align import AlignConfig
from opticmem.encoder.errors import ConfigError
from opticmem.render.tiers import ORDER


@dataclass(frozen=True)
class SamConfig:
    """SAM-style ViT: patch 16 conv, windowed attention with decomposed relative positions,
    a few global blocks, absolute position embedding, and a conv neck."""

    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    pos_grid: int = 64
    """Side of the grid ``pos_embed`` is stored at (1024 px / 16); other grids interpolate."""
    neck_channels: int = 256
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_dim(self) -> int:
        return int(self.width * self.mlp_ratio)


@dataclass(frozen=True)
class CompressorConfig:
    """The 16× token compressor: two 3×3 stride-2 convs, no norm or activation."""

    mid_channels: int = 512
    out_channels: int = 1024


@dataclass(frozen=True)
class ClipConfig:
    """CLIP-style ViT run on the compressed grid (its own patch conv is bypassed)."""

    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_dim: int = 4096
    pos_grid: int = 16
    """Side of the grid ``position_embedding`` is stored at (224 px / 14, plus one CLS row)."""
    norm_eps: float = 1e-5
    patch_size: int = 14
    keep_patch_embedding: bool = False
    """Keep the unused patch conv so the official checkpoint's key list matches exactly."""

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


@dataclass(frozen=True)
class DecoderConfig:
    """DeepSeek-V2-style decoder with plain MHA, a dense first layer and MoE layers."""

    vocab_size: int = 129280
    hidden_size: int = 1280
    layers: int = 12
    heads: int = 10
    head_dim: int = 128
    rope_theta: float = 10000.0
    max_positions: int = 8192
    norm_eps: float = 1e-6
    first_k_dense: int = 1
    dense_intermediate: int = 6848
    routed_experts: int = 64
    experts_per_token: int = 6
    shared_experts: int = 2
    """Shared experts run as one MLP of ``shared_experts · moe_intermediate`` width."""
    moe_intermediate: int = 896
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = False
    aux_loss_alpha: float = 0.001
    bos_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 2
    image_token_id: int = 128815

    @property
    def shared_intermediate(self) -> int:
        return self.shared_experts * self.moe_intermediate

    def is_moe_layer(self, index: int) -> bool:
        """Layers before ``first_k_dense`` are dense; every later one is MoE."""
        return index >= self.first_k_dense and self.routed_experts > 0


@dataclass(frozen=True)
class ModelConfig:
    """A whole DeepSeek-OCR-style model: DeepEncoder, projector and decoder."""

    name: str = "official"
    sam: SamConfig = field(default_factory=SamConfig)
    compressor: CompressorConfig = field(default_factory=CompressorConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    fusion_norm: bool = False
    """LayerNorm on the fused [CLIP, SAM] features before the projector. Not in the official
    model; the bundled model needs it: trained from scratch at a high learning rate, the
    norm-free compressor grew activations past what bf16 can resolve (see the model card)."""
    align: AlignConfig | None = None
    """Layout aligner for pages of our monospace renderer (bundled codec); ``None`` in the
    official model. See :mod:`opticmem.encoder.align`."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def vision_dim(self) -> int:
        """Channels of the fused [CLIP, SAM] token features fed to the projector."""
        return self.clip.width + self.compressor.out_channels

    @property
    def embed_dim(self) -> int:
        """Width of a vision token after projection (= the decoder's hidden size)."""
        return self.decoder.hidden_size

    def validate(self) -> None:
        """Raise :class:`ConfigError` if the sizes cannot build a consistent model."""
        s, c, k, d = self.sam, self.clip, self.compressor, self.decoder
        # Types and positive sizes first: a string size or zero heads (say, from an edited
        # config.json) used to escape as a TypeError or ZeroDivisionError from the checks below.
        problems = _type_problems(self)
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))
        if s.width % s.heads:
            problems.append(f"sam.width {s.width} not divisible by sam.heads {s.heads}")
        if any(not 0 <= i < s.depth for i in s.global_attn_indexes):
            problems.append(
                f"sam.global_attn_indexes {s.global_attn_indexes} outside depth {s.depth}"
            )
        if s.window_size < 0:
            problems.append("sam.window_size must be ≥ 0")
        if c.width % c.heads:
            problems.append(f"clip.width {c.width} not divisible by clip.heads {c.heads}")
        if k.out_channels != c.width:
            problems.append(
                f"compressor.out_channels {k.out_channels} must equal clip.width {c.width} "
                "(the compressed grid is CLIP's patch embedding)"
            )
        if d.routed_experts and not 0 < d.experts_per_token <= d.routed_experts:
            problems.append(
                f"decoder.experts_per_token must be in 1..{d.routed_experts} (at most "
                f"decoder.routed_experts), got {d.experts_per_token}"
            )
        if d.vocab_size > MAX_VOCAB_SIZE:
            # torch's multi-terabyte allocation failure came out of building the embedding
            problems.append(
                f"decoder.vocab_size must be in 1..{MAX_VOCAB_SIZE:,} (the official model "
                f"has 129,280), got {d.vocab_size:,}"
            )
        elif d.vocab_size * d.hidden_size > MAX_EMBEDDING_ELEMENTS:
            problems.append(
                f"decoder.vocab_size × decoder.hidden_size must be at most "
                f"{MAX_EMBEDDING_ELEMENTS:,} (the embedding and the LM head each hold that "
                f"many weights; the official model's 165,478,400), got {d.vocab_size:,} × "
                f"{d.hidden_size:,} = {d.vocab_size * d.hidden_size:,}"
            )
        for what, n in (("sam.depth", s.depth), ("clip.depth", c.depth),
                        ("decoder.layers", d.layers)):
            if n > MAX_LAYERS:  # the model was built (for ever) before anything said so
                problems.append(f"{what} must be at most {MAX_LAYERS} (the official model "
                                f"has 12, 24 and 12), got {n:,}")
        experts = d.layers * (d.routed_experts + d.shared_experts)
        if d.layers <= MAX_LAYERS and experts > MAX_EXPERT_MODULES:
            problems.append(
                f"decoder.layers × (decoder.routed_experts + decoder.shared_experts) must be "
                f"at most {MAX_EXPERT_MODULES:,} (the official model's 12 × 66 = 792), got "
                f"{d.layers:,} × {d.routed_experts + d.shared_experts:,} = {experts:,}")
        if d.max_positions < MIN_POSITIONS:
            # generation reads at most max_positions tokens: a page of 1 read one token
            problems.append(
                f"decoder.max_positions must be ≥ {MIN_POSITIONS} (the largest tier's "
                f"{MIN_POSITIONS - 1 - MIN_TEXT_POSITIONS} vision slots, BOS and "
                f"{MIN_TEXT_POSITIONS} text tokens), got {d.max_positions}"
            )
        if not 0 <= d.first_k_dense <= d.layers:
            problems.append(f"decoder.first_k_dense must be in 0..{d.layers} (at most "
                            f"decoder.layers), got {d.first_k_dense}")
        if d.head_dim % 2:
            problems.append("decoder.head_dim must be even for rotary embeddings")
        ids = {
            "bos": d.bos_token_id, "eos": d.eos_token_id,
            "pad": d.pad_token_id, "image": d.image_token_id,
        }
        for what, i in ids.items():
            if not 0 <= i < d.vocab_size:
                problems.append(f"decoder.{what}_token_id {i} outside vocab {d.vocab_size}")
        if self.align is not None and self.align.reader_points > self.align.ahead:
            problems.append(f"align.reader_points must be at most align.ahead "
                            f"({self.align.ahead}), got {self.align.reader_points}")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown fields raise :class:`ConfigError`."""
        parts: dict[str, type] = {
            "sam": SamConfig, "compressor": CompressorConfig,
            "clip": ClipConfig, "decoder": DecoderConfig,
        }
        # a section left out silently took the official model's sizes: the error then
        # blamed the first weight whose shape differed, not the config
        missing = [k for k in ("name", *parts) if k not in data]
        if missing:
            raise ConfigError(f"model config lacks {', '.join(map(repr, missing))}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts:
                kwargs[key] = _build(parts[key], value, key)
            elif key == "name":
                if not isinstance(value, str) or not value.strip():  # null was named "None"
                    raise ConfigError(f"name must be a non-empty string, got {value!r}")
                kwargs[key] = value
            elif key == "fusion_norm":
                if not isinstance(value, bool):  # bool("false") would switch it on
                    raise ConfigError(f"fusion_norm must be true or false, got {value!r}")
                kwargs[key] = value
            elif key == "align":
                kwargs[key] = None if value is None else _build(AlignConfig, value, key)
            else:
                raise ConfigError(f"unknown model config field {key!r}")
        return cls(**kwargs)


MAX_VOCAB_SIZE = 2**22
"""Most ``decoder.vocab_size`` a config may give (4,194,304): 32× the official model's
129,280 and 16× the largest vocabularies in use (~262k). A config.json of 10**12 otherwise
failed with torch's C++ allocation trace when the embedding was built."""

MAX_LAYERS = 256
"""Most blocks ``sam.depth``, ``clip.depth`` or ``decoder.layers`` may give: 10× the
official model's deepest (CLIP's 24). Building a model of a config.json's 10**30 layers,
even on the meta device, looped until it ran out of memory."""

MAX_EXPERT_MODULES = 8192
"""Most experts all decoder layers may hold together, ``layers × (routed_experts +
shared_experts)``: 10× the official model's 792. Each is a module of its own, built one
by one (a few seconds for this many); a config.json of a million took minutes and
gigabytes before any weight was compared."""

MAX_EMBEDDING_ELEMENTS = 2**33
"""Most weights the token embedding (and, as many, the LM head) may hold: 8,589,934,592,
52× the official model's 129,280 × 1,280 (16 GiB in bf16 each). Bounds a huge
``hidden_size`` beside a plausible vocabulary the same way."""

MIN_TEXT_POSITIONS = 64
"""Text tokens a decoder must have room for beside the largest tier's vision slots."""

MIN_POSITIONS = max(t.slots for t in ORDER) + 1 + MIN_TEXT_POSITIONS
"""Fewest ``decoder.max_positions`` a config may give (486): BOS, the vision slots of the
largest tier (Large, 421) and :data:`MIN_TEXT_POSITIONS` tokens of text. Generation reads
at most ``max_positions`` tokens, so a config of 1 loaded and read one token per page."""

_POSITIVE: dict[str, tuple[str, ...]] = {
    "sam": ("width", "heads", "patch_size", "pos_grid", "neck_channels"),
    "compressor": ("mid_channels", "out_channels"),
    "clip": ("width", "heads", "mlp_dim", "pos_grid", "patch_size"),
    "decoder": ("vocab_size", "hidden_size", "layers", "heads", "head_dim", "max_positions",
                "dense_intermediate", "moe_intermediate"),
    "align": ("point_dim", "reader_hidden"),
}
"""Sizes that must be ≥ 1 (dividing by them, or a layer of that width, needs one). A zero
MLP width built a layer that adds nothing; a negative one, torch's "negative dimension"."""

_NON_NEGATIVE: dict[str, tuple[str, ...]] = {
    "decoder": ("routed_experts", "shared_experts", "aux_loss_alpha"),
    "align": ("reader_points",),
}
"""Counts and weights that may be 0 (no MoE layers, no shared experts, no balancing loss)
but not less: ``shared_experts`` -1 silently dropped the shared MLP, ``routed_experts`` -1
was reported as a bad ``experts_per_token``, and a negative ``aux_loss_alpha`` trains the
router towards imbalance."""

_POSITIVE_FLOATS: dict[str, tuple[str, ...]] = {
    "sam": ("mlp_ratio", "norm_eps"),
    "clip": ("norm_eps",),
    "decoder": ("rope_theta", "norm_eps", "routed_scaling_factor"),
}
"""Numbers that must be > 0: a norm's epsilon of 0 or less, or a rotary base of 0 or less,
loads (no tensor's shape depends on them) and then reads every page as NaN; a
``routed_scaling_factor`` of 0 drops the routed experts' output, a negative one flips it."""


def _type_problems(cfg: ModelConfig) -> list[str]:
    """Fields of ``cfg``'s sections whose value is not of the annotated kind (an int, a
    finite number, a tuple of ints), sizes of :data:`_POSITIVE` below 1, values of
    :data:`_NON_NEGATIVE` below 0 and numbers of :data:`_POSITIVE_FLOATS` not above 0."""
    problems: list[str] = []
    # The aligner too: no tensor's shape depends on its frequencies, so a string there
    # loaded and failed the first encode with a bare TypeError.
    sections = ("sam", "compressor", "clip", "decoder") + (("align",) if cfg.align else ())
    for where in sections:
        part = getattr(cfg, where)
        for f in fields(part):
            value = getattr(part, f.name)
            ints = value if f.type == "tuple[int, ...]" else (value,)
            if f.type in ("int", "tuple[int, ...]"):
                ok = (isinstance(value, tuple) or f.type == "int") and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in ints)
            elif f.type == "float":
                # NaN or infinity (JSON's non-standard literals) is no setting of any of them
                ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                      and math.isfinite(value))
            elif f.type == "bool":
                ok = isinstance(value, bool)
            else:
                ok = True
            if not ok:
                problems.append(f"{where}.{f.name} must be {f.type}, got {value!r}")
            elif f.name in _POSITIVE[where] and value < 1:
                problems.append(f"{where}.{f.name} must be ≥ 1, got {value!r}")
            elif f.name in _NON_NEGATIVE.get(where, ()) and value < 0:
                problems.append(f"{where}.{f.name} must be ≥ 0, got {value!r}")
            elif f.name in _POSITIVE_FLOATS.get(where, ()) and value <= 0:
                problems.append(f"{where}.{f.name} must be > 0, got {value!r}")
    return problems


_ADDED_LATER: dict[str, tuple[str, ...]] = {"align": ("reader_points", "reader_hidden")}
"""Fields that configs written before them lack; absent, they take their default, which
keeps such a model as it was (no reader). Every other field must be given."""


def _build(kind: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where!r} must be an object, got {type(data).__name__}")
    known = {f.name: f for f in fields(kind)}
    optional = _ADDED_LATER.get(where, ())
    missing = [f"{where}.{name}" for name in known if name not in data and name not in optional]
    if missing:  # it took the official model's value, and a shard was blamed for the shape
        raise ConfigError(f"config lacks {', '.join(missing)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"unknown field {where}.{key}")
        values[key] = tuple(value) if isinstance(value, list) else value
    return kind(**values)


def _official() -> ModelConfig:
    return ModelConfig(
        name="official",
        sam=SamConfig(),
        compressor=CompressorConfig(),
        clip=ClipConfig(keep_patch_embedding=True),
        decoder=DecoderConfig(),
    )


def _bundled() -> ModelConfig:
    return ModelConfig(
        name="bundled",
        sam=SamConfig(
            width=192, depth=4, heads=3, global_attn_indexes=(1, 3), window_size=14,
            pos_grid=64, neck_channels=128,
        ),
        compressor=CompressorConfig(mid_channels=256, out_channels=384),
        clip=ClipConfig(width=384, depth=2, heads=6, mlp_dim=1536, pos_grid=16),
        decoder=DecoderConfig(
            vocab_size=4096, hidden_size=384, layers=4, heads=6, head_dim=64,
            first_k_dense=1, dense_intermediate=1024, routed_experts=6, experts_per_token=2,
            shared_experts=1, moe_intermediate=256, max_positions=4096,
            bos_token_id=0, eos_token_id=1, pad_token_id=2, image_token_id=3,
        ),
        fusion_norm=True,
        align=AlignConfig(),
    )


def _test() -> ModelConfig:
    return ModelConfig(
        name="test",
        sam=SamConfig(
            width=32, depth=2, heads=2, global_attn_indexes=(1,), window_size=14,
            pos_grid=16, neck_channels=16,
        ),
        compressor=CompressorConfig(mid_channels=32, out_channels=64),
        clip=ClipConfig(width=64, depth=1, heads=2, mlp_dim=256, pos_grid=8),
        decoder=DecoderConfig(
            vocab_size=4096, hidden_size=64, layers=2, heads=2, head_dim=32,
            first_k_dense=1, dense_intermediate=128, routed_experts=4, experts_per_token=2,
            shared_experts=1, moe_intermediate=32, max_positions=4096,
            bos_token_id=0, eos_token_id=1, pad_token_id=2, image_token_id=3,
        ),
        fusion_norm=True,
        align=AlignConfig(point_dim=16),
    )


PRESETS = ("official", "bundled", "test")
"""Names accepted by :func:`preset`."""


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset, optionally with top-level fields replaced.

    >>> preset("test").decoder.routed_experts
    4
    """
    builders = {"official": _official, "bundled": _bundled, "test": _test}
    try:
        cfg = builders[name]()
    except KeyError:
        choices = ", ".join(PRESETS)
        raise ConfigError(f"unknown preset {name!r}; expected one of: {choices}") from None
    return replace(cfg, **overrides) if overrides else cfg
