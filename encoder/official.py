"""Load the released ``deepseek-ai/DeepSeek-OCR`` checkpoint into our classes.

:data:`KEY_MAP` is the one table from the official tensor names to ours. ``{i}`` and
``{e}`` stand for layer and expert numbers, ``{p}`` for ``weight``/``bias``, ``{proj}``
for one of the attention projections and ``{mlp}`` for one of the gated-MLP matrices;
a placeholder keeps its value on both sides. Loading is strict: every official tensor
must map to exactly one of our parameters with the same shape, and every parameter must
be covered (see :func:`opticmem.encoder.checkpoint.load_tensors`).

>>> to_ours("model.sam_model.blocks.3.mlp.lin1.bias")
'vision.sam.blocks.3.mlp.fc1.bias'
>>> to_official("decoder.layers.5.mlp.router.weight")
'model.layers.5.mlp.gate.weight'
"""

# ruff: noqa: E501  (the key table reads best one mapping per line)

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from opticmem.encoder.checkpoint import (
    INDEX_FILE,
    load_tensors,
    not_a_file,
    read_index,
    refuse_pickles,
)
from opticmem.encoder.config import ModelConfig, preset
from opticmem.encoder.errors import CheckpointError, InputError
from opticmem.encoder.model import (
    OCRModel,
    build_model,
    default_dtype,
    resolve_device,
)

log = logging.getLogger(__name__)

REPO_ID = "deepseek-ai/DeepSeek-OCR"

KEY_MAP: tuple[tuple[str, str], ...] = (
    # official name                                               our name
    ("model.sam_model.pos_embed",                                  "vision.sam.pos_embed"),
    ("model.sam_model.patch_embed.proj.{p}",                       "vision.sam.patch_embed.{p}"),
    ("model.sam_model.blocks.{i}.norm1.{p}",                       "vision.sam.blocks.{i}.norm1.{p}"),
    ("model.sam_model.blocks.{i}.attn.qkv.{p}",                    "vision.sam.blocks.{i}.attn.qkv.{p}"),
    ("model.sam_model.blocks.{i}.attn.proj.{p}",                   "vision.sam.blocks.{i}.attn.proj.{p}"),
    ("model.sam_model.blocks.{i}.attn.rel_pos_h",                  "vision.sam.blocks.{i}.attn.rel_pos_h"),
    ("model.sam_model.blocks.{i}.attn.rel_pos_w",                  "vision.sam.blocks.{i}.attn.rel_pos_w"),
    ("model.sam_model.blocks.{i}.norm2.{p}",                       "vision.sam.blocks.{i}.norm2.{p}"),
    ("model.sam_model.blocks.{i}.mlp.lin1.{p}",                    "vision.sam.blocks.{i}.mlp.fc1.{p}"),
    ("model.sam_model.blocks.{i}.mlp.lin2.{p}",                    "vision.sam.blocks.{i}.mlp.fc2.{p}"),
    ("model.sam_model.neck.0.weight",                              "vision.sam.neck.conv1.weight"),
    ("model.sam_model.neck.1.{p}",                                 "vision.sam.neck.norm1.{p}"),
    ("model.sam_model.neck.2.weight",                              "vision.sam.neck.conv2.weight"),
    ("model.sam_model.neck.3.{p}",                                 "vision.sam.neck.norm2.{p}"),
    ("model.sam_model.net_2.weight",                               "vision.compressor.conv1.weight"),
    ("model.sam_model.net_3.weight",                               "vision.compressor.conv2.weight"),
    ("model.vision_model.embeddings.class_embedding",              "vision.clip.class_embedding"),
    ("model.vision_model.embeddings.patch_embedding.weight",       "vision.clip.patch_embedding.weight"),
    ("model.vision_model.embeddings.position_embedding.weight",    "vision.clip.position_embedding"),
    ("model.vision_model.pre_layrnorm.{p}",                        "vision.clip.pre_norm.{p}"),
    ("model.vision_model.transformer.layers.{i}.layer_norm1.{p}",  "vision.clip.blocks.{i}.norm1.{p}"),
    ("model.vision_model.transformer.layers.{i}.self_attn.qkv_proj.{p}",
                                                                   "vision.clip.blocks.{i}.attn.qkv.{p}"),
    ("model.vision_model.transformer.layers.{i}.self_attn.out_proj.{p}",
                                                                   "vision.clip.blocks.{i}.attn.proj.{p}"),
    ("model.vision_model.transformer.layers.{i}.layer_norm2.{p}",  "vision.clip.blocks.{i}.norm2.{p}"),
    ("model.vision_model.transformer.layers.{i}.mlp.fc1.{p}",      "vision.clip.blocks.{i}.mlp.fc1.{p}"),
    ("model.vision_model.transformer.layers.{i}.mlp.fc2.{p}",      "vision.clip.blocks.{i}.mlp.fc2.{p}"),
    ("model.projector.layers.{p}",                                 "vision.projector.{p}"),
    ("model.image_newline",                                        "vision.image_newline"),
    ("model.view_seperator",                                       "vision.view_separator"),
    ("model.embed_tokens.weight",                                  "decoder.embed_tokens.weight"),
    ("model.layers.{i}.input_layernorm.weight",                    "decoder.layers.{i}.attn_norm.weight"),
    ("model.layers.{i}.self_attn.{proj}.weight",                   "decoder.layers.{i}.attn.{proj}.weight"),
    ("model.layers.{i}.post_attention_layernorm.weight",           "decoder.layers.{i}.mlp_norm.weight"),
    ("model.layers.{i}.mlp.{mlp}.weight",                          "decoder.layers.{i}.mlp.{mlp}.weight"),
    ("model.layers.{i}.mlp.gate.weight",                           "decoder.layers.{i}.mlp.router.weight"),
    ("model.layers.{i}.mlp.experts.{e}.{mlp}.weight",              "decoder.layers.{i}.mlp.experts.{e}.{mlp}.weight"),
    ("model.layers.{i}.mlp.shared_experts.{mlp}.weight",           "decoder.layers.{i}.mlp.shared.{mlp}.weight"),
    ("model.norm.weight",                                          "decoder.norm.weight"),
    ("lm_head.weight",                                             "decoder.lm_head.weight"),
)  # fmt: skip

_PLACEHOLDERS = {
    "i": r"\d+",
    "e": r"\d+",
    "p": r"weight|bias",
    "proj": r"[qkvo]_proj",
    "mlp": r"(?:gate|up|down)_proj",
}


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        f"(?P<{part}>{_PLACEHOLDERS[part]})" if i % 2 else re.escape(part)
        for i, part in enumerate(parts)
    )
    return re.compile(regex)


@cache
def _rules(reverse: bool) -> tuple[tuple[re.Pattern[str], str], ...]:
    return tuple(
        (_compile(ours), official) if reverse else (_compile(official), ours)
        for official, ours in KEY_MAP
    )


def _translate(name: str, reverse: bool) -> str | None:
    for pattern, template in _rules(reverse):
        m = pattern.fullmatch(name)
        if m:
            return template.format(**m.groupdict())
    return None


def to_ours(official: str) -> str:
    """Our parameter name for an official tensor name (:class:`CheckpointError` if none)."""
    ours = _translate(official, reverse=False)
    if ours is None:
        raise CheckpointError("official tensor name not in the key map", key=official)
    return ours


def to_official(ours: str) -> str:
    """The official tensor name for one of our parameter names."""
    official = _translate(ours, reverse=True)
    if official is None:
        raise CheckpointError("parameter has no official name", key=ours)
    return official


def official_config(**overrides: Any) -> ModelConfig:
    """The ``official`` preset (the released checkpoint's architecture)."""
    return preset("official", **overrides)


# Fields of the released config.json checked against the preset before loading.
_CONFIG_CHECKS: tuple[tuple[str, str], ...] = (
    ("vocab_size", "vocab_size"),
    ("hidden_size", "hidden_size"),
    ("num_hidden_layers", "layers"),
    ("num_attention_heads", "heads"),
    ("intermediate_size", "dense_intermediate"),
    ("moe_intermediate_size", "moe_intermediate"),
    ("n_routed_experts", "routed_experts"),
    ("num_experts_per_tok", "experts_per_token"),
    ("n_shared_experts", "shared_experts"),
    ("first_k_dense_replace", "first_k_dense"),
)


def check_config_json(path: Path, cfg: ModelConfig) -> None:
    """Raise :class:`CheckpointError` if a released ``config.json`` disagrees with ``cfg``."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError("file missing", path=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested past Python's recursion limit.
        raise CheckpointError(f"unreadable JSON: {exc}", path=str(path)) from exc
    lang = data.get("language_config") if isinstance(data, dict) else None
    if not isinstance(lang, dict):
        raise CheckpointError("config.json has no language_config", path=str(path))
    for theirs, ours in _CONFIG_CHECKS:
        if theirs in lang and lang[theirs] != getattr(cfg.decoder, ours):
            raise CheckpointError(
                f"language_config.{theirs} = {lang[theirs]!r} but the model config has "
                f"{getattr(cfg.decoder, ours)!r}",
                path=str(path),
                key=theirs,
            )


def load_official(
    source: str | Path = REPO_ID,
    *,
    config: ModelConfig | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
) -> OCRModel:
    """Load the official checkpoint from a local directory or a Hub repo id.

    ``source`` is a directory holding ``model.safetensors.index.json`` and its shards
    (plus ``config.json``, checked against ``config``), or a repo id such as
    ``"deepseek-ai/DeepSeek-OCR"`` (needs ``huggingface_hub`` and a network). ``config``
    defaults to the ``official`` preset; a smaller config loads a small checkpoint written
    in the official layout. Defaults: CUDA + bf16 when available, else CPU + fp32; a
    ``dtype`` that is not a floating-point ``torch.dtype`` raises :class:`InputError`
    before anything is downloaded or built.
    """
    check_dtype(dtype)
    root = resolve_source(source, revision)
    cfg = config or official_config()
    refuse_pickles(root)
    if config is None or (root / "config.json").exists():
        check_config_json(root / "config.json", cfg)
    weight_map, _ = read_index(root)
    for name in weight_map:
        if _translate(name, reverse=False) is None:
            raise CheckpointError(
                "official tensor name not in the key map", path=str(root / INDEX_FILE), key=name
            )
    # A download cut short: say so before the 3B-parameter model is built and half loaded.
    for name, fname in weight_map.items():
        if why := not_a_file(root / fname):
            raise CheckpointError(f"shard {why}", path=str(root / fname), key=name)
    dev = resolve_device(device)
    model = build_model(cfg, device=dev, dtype=dtype or default_dtype(dev), seed=None)
    load_tensors(model, root, weight_map, rename=to_ours, unrename=to_official)
    log.info("loaded official-layout checkpoint %s (%s)", root, cfg.name)
    return model.eval()


def check_dtype(dtype: torch.dtype | None) -> None:
    """Raise :class:`InputError` unless ``dtype`` is ``None`` or a floating-point
    ``torch.dtype`` (torch's own TypeError would come from deep in building the model)."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating-point torch.dtype such as torch.bfloat16, "
                         f"got {dtype!r}")


def load_official_tokenizer(source: str | Path = REPO_ID, revision: str | None = None) -> Tokenizer:
    """The released fast tokenizer (``tokenizer.json``) from a directory or the Hub."""
    path = resolve_source(source, revision) / "tokenizer.json"
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception subclasses
        raise CheckpointError(f"cannot read tokenizer: {exc}", path=str(path)) from exc


def resolve_source(source: str | Path, revision: str | None = None) -> Path:
    """A local directory as is; else a Hub repo id (see :func:`_is_repo_id`), downloaded.

    Anything else raises :class:`CheckpointError` saying there is no checkpoint directory
    there. A repo-id-shaped string such as ``models/dso`` may also have been meant as a
    relative path: if the Hub fails too, the error says both (no such directory, and why
    the Hub lookup failed), rather than only a download failure for a path the user typed.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    text = str(source)
    if path.exists():
        raise CheckpointError(f"no checkpoint directory at {text} (a file is there)")
    if not _is_repo_id(text):
        raise CheckpointError(f"no checkpoint directory at {text}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{text!r} is not a local directory and huggingface_hub is not installed "
            "(pip install 'opticmem[hub]')",
            path=text,
        ) from None
    try:
        local = snapshot_download(
            repo_id=text,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*"],
        )
    except Exception as exc:  # network, auth, missing repo
        raise CheckpointError(
            f"no checkpoint directory at {text}, and as a Hub repo id it cannot be "
            f"downloaded: {exc}",
            path=text,
        ) from exc
    return Path(local)


def _is_repo_id(text: str) -> bool:
    """Whether ``text`` has the shape of a Hub repo id: exactly ``owner/name`` (both
    non-empty), with no leading ``.``, ``/`` or ``~`` and no backslash — anything else
    can only be meant as a local path.

    >>> _is_repo_id("deepseek-ai/DeepSeek-OCR"), _is_repo_id("./models/dso")
    (True, False)
    >>> _is_repo_id("models/dso/v2"), _is_repo_id("~/dso"), _is_repo_id("dso")
    (False, False, False)
    """
    owner, slash, name = text.partition("/")
    return (bool(slash and owner and name) and "/" not in name and "\\" not in text
            and not text.startswith((".", "/", "~")))


def official_key_list(cfg: ModelConfig | None = None) -> list[str]:
    """Official tensor names of a model of ``cfg`` (default ``official``), built on meta."""
    model = build_model(cfg or official_config(), device="meta")
    return [to_official(name) for name in model.state_dict()]


def with_official_layout(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` shaped like the official key layout: CLIP's unused patch conv kept, and no
    fusion norm or layout aligner (the released model has neither)."""
    return replace(cfg, clip=replace(cfg.clip, keep_patch_embedding=True), align=None,
                   fusion_norm=False)
