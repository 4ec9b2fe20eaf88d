"""Opt-in equivalence checks against transformers' native implementations.

* Decoder: DeepSeek-OCR v1's decoder is the DeepSeek-V2 family with plain MHA and a softmax
  greedy top-k MoE with shared experts — what transformers' native ``DeepseekOcr2TextModel``
  implements (experts fused as ``gate_up_proj``/``down_proj``).
* SAM stage + compressor: DeepSeek-OCR 2 keeps v1's SAM-base + two stride-2 convs;
  ``DeepseekOcr2SamVisionEncoder`` (bicubic-antialiased ``pos_embed``, windowed attention,
  interpolated decomposed rel-pos, neck, ``proj.conv1/2``) is the oracle, run off its native
  grid so both interpolations are exercised.
* CLIP blocks: transformers' ``CLIPVisionModel`` (quick-GELU, pre-LayerNorm) with our fused
  ``qkv`` split into its q/k/v projections, fed our embeddings.

With identical random weights the outputs must agree.

Run it with::

    OPTICMEM_ORACLE=1 .venv/bin/python -m pytest tests/encoder/test_encoder_oracle.py -m oracle

Tolerance: fp32 on CPU, max |Δ| ≤ 1e-4 on outputs of unit scale.
"""

from __future__ import annotations

import os

import pytest
import torch

from opticmem.encoder.clip import interpolate_positions
from opticmem.encoder.config import DecoderConfig, preset
from opticmem.encoder.decoder import MoEDecoder
from opticmem.encoder.model import build_model
from opticmem.encoder.moe import MoE

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(
        os.environ.get("OPTICMEM_ORACLE") != "1",
        reason="opt-in equivalence check: set OPTICMEM_ORACLE=1 (needs transformers ≥ 5.17)",
    ),
]


def native_decoder(ours: MoEDecoder) -> torch.nn.Module:
    """transformers' DeepseekOcr2TextModel with our decoder's dims and weights."""
    from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import (
        DeepseekOcr2TextConfig,
    )
    from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import DeepseekOcr2TextModel

    d: DecoderConfig = ours.cfg
    config = DeepseekOcr2TextConfig(
        vocab_size=d.vocab_size,
        hidden_size=d.hidden_size,
        intermediate_size=d.dense_intermediate,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        num_key_value_heads=d.heads,
        max_position_embeddings=d.max_positions,
        rms_norm_eps=d.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": d.rope_theta},
        n_routed_experts=d.routed_experts,
        n_shared_experts=d.shared_experts,
        moe_intermediate_size=d.moe_intermediate,
        num_experts_per_tok=d.experts_per_token,
        topk_method="greedy",
        routed_scaling_factor=d.routed_scaling_factor,
        mlp_layer_types=["dense" if not d.is_moe_layer(i) else "sparse" for i in range(d.layers)],
    )
    config._attn_implementation = "eager"
    native = DeepseekOcr2TextModel(config).eval()
    sd = {
        "embed_tokens.weight": ours.embed_tokens.weight,
        "norm.weight": ours.norm.weight,
    }
    for i, layer in enumerate(ours.layers):
        p = f"layers.{i}."
        sd[p + "input_layernorm.weight"] = layer.attn_norm.weight
        sd[p + "post_attention_layernorm.weight"] = layer.mlp_norm.weight
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{name}.weight"] = getattr(layer.attn, name).weight
        mlp = layer.mlp
        if isinstance(mlp, MoE):
            experts = mlp.expert_list()
            sd[p + "mlp.gate.weight"] = mlp.router.weight
            sd[p + "mlp.experts.gate_up_proj"] = torch.stack(
                [torch.cat([e.gate_proj.weight, e.up_proj.weight]) for e in experts]
            )
            sd[p + "mlp.experts.down_proj"] = torch.stack([e.down_proj.weight for e in experts])
            assert mlp.shared is not None
            for name in ("gate_proj", "up_proj", "down_proj"):
                sd[p + f"mlp.shared_experts.{name}.weight"] = getattr(mlp.shared, name).weight
        else:
            for name in ("gate_proj", "up_proj", "down_proj"):
                sd[p + f"mlp.{name}.weight"] = getattr(mlp, name).weight
    missing, unexpected = native.load_state_dict(
        {k: v.detach().clone() for k, v in sd.items()}, strict=False
    )
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return native


@pytest.mark.parametrize("name", ["test", "bundled"])
def test_decoder_matches_transformers_deepseek_ocr2_text(name: str) -> None:
    cfg = preset(name)
    model = build_model(cfg, seed=11).init_weights(11, std=0.1)  # every part matters
    with torch.no_grad():  # larger router spread so top-k choices are well separated
        for layer in model.decoder.layers:
            if isinstance(layer.mlp, MoE):
                layer.mlp.router.weight.normal_(std=0.2)
    native = native_decoder(model.decoder)
    torch.manual_seed(0)
    embeds = torch.randn(2, 37, cfg.decoder.hidden_size)
    with torch.no_grad():
        ours = model.decoder(embeds)
        theirs = native(inputs_embeds=embeds).last_hidden_state
    ours_train = model.decoder.train()(embeds).detach()  # with grad: per-expert modules
    scale = max(1.0, float(theirs.abs().max()))
    assert (ours - theirs).abs().max() <= 1e-4 * scale
    assert (ours_train - theirs).abs().max() <= 1e-4 * scale


def test_sam_and_compressor_match_transformers_sam_encoder() -> None:
    from transformers.models.deepseek_ocr2.configuration_deepseek_ocr2 import (
        DeepseekOcr2SamVisionConfig,
    )
    from transformers.models.deepseek_ocr2.modeling_deepseek_ocr2 import (
        DeepseekOcr2SamVisionEncoder,
    )

    cfg = preset("test")
    model = build_model(cfg, seed=12).init_weights(12, std=0.1)
    s, k = cfg.sam, cfg.compressor
    with torch.no_grad():  # non-zero rel-pos tables, so the bias matters
        for block in model.vision.sam.blocks:
            block.attn.rel_pos_h.normal_(std=0.5)
            block.attn.rel_pos_w.normal_(std=0.5)
    config = DeepseekOcr2SamVisionConfig(
        hidden_size=s.width, output_channels=s.neck_channels, num_hidden_layers=s.depth,
        num_attention_heads=s.heads, image_size=s.pos_grid * s.patch_size,
        patch_size=s.patch_size, window_size=s.window_size,
        global_attn_indexes=list(s.global_attn_indexes), layer_norm_eps=s.norm_eps,
        downsample_channels=[k.mid_channels, k.out_channels],
    )
    config._attn_implementation = "eager"
    native = DeepseekOcr2SamVisionEncoder(config).eval()
    renames = {  # our SAM names → theirs (whole dotted components)
        "patch_embed": "patch_embed.projection", "blocks": "layers", "norm1": "layer_norm1",
        "norm2": "layer_norm2", "fc1": "lin1", "fc2": "lin2",
    }
    sd = {}
    for name, tensor in model.vision.sam.state_dict().items():
        parts = name.split(".")
        sd[".".join([renames.get(p, p) for p in parts[:-1]] + parts[-1:])] = tensor
    for name, tensor in model.vision.compressor.state_dict().items():
        sd["proj." + name] = tensor
    native.load_state_dict(sd, strict=True)
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 512, 512)  # 32×32 patches: pos_embed 16→32, rel-pos 31→63
    with torch.no_grad():
        ours = model.vision.compressor(model.vision.sam(pixels))
        theirs = native(pixels).last_hidden_state
    assert ours.shape == theirs.shape == (2, k.out_channels, 8, 8)
    assert (ours - theirs).abs().max() <= 1e-4 * max(1.0, float(theirs.abs().max()))


def test_clip_blocks_match_transformers_clip() -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = preset("test")
    model = build_model(cfg, seed=13).init_weights(13, std=0.1)
    c = cfg.clip
    config = CLIPVisionConfig(
        hidden_size=c.width, intermediate_size=c.mlp_dim, num_hidden_layers=c.depth,
        num_attention_heads=c.heads, hidden_act="quick_gelu", layer_norm_eps=c.norm_eps,
        image_size=224, patch_size=14,
    )
    config._attn_implementation = "eager"
    native = CLIPVisionModel(config).eval()
    clip = model.vision.clip
    sd = {"pre_layrnorm.weight": clip.pre_norm.weight, "pre_layrnorm.bias": clip.pre_norm.bias}
    for i, block in enumerate(clip.blocks):
        p = f"encoder.layers.{i}."
        for ours_norm, theirs_norm in ((block.norm1, "layer_norm1"), (block.norm2, "layer_norm2")):
            sd[p + f"{theirs_norm}.weight"] = ours_norm.weight
            sd[p + f"{theirs_norm}.bias"] = ours_norm.bias
        for part, w, b in zip(
            ("q_proj", "k_proj", "v_proj"),
            block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3), strict=True,
        ):
            sd[p + f"self_attn.{part}.weight"], sd[p + f"self_attn.{part}.bias"] = w, b
        sd[p + "self_attn.out_proj.weight"] = block.attn.proj.weight
        sd[p + "self_attn.out_proj.bias"] = block.attn.proj.bias
        for fc in ("fc1", "fc2"):
            sd[p + f"mlp.{fc}.weight"] = getattr(block.mlp, fc).weight
            sd[p + f"mlp.{fc}.bias"] = getattr(block.mlp, fc).bias
    missing, unexpected = native.load_state_dict(
        {k: v.detach().clone() for k, v in sd.items()}, strict=False
    )
    assert not unexpected and all(k.startswith(("embeddings.", "post_layernorm.")) for k in missing)
    torch.manual_seed(2)
    grid = torch.randn(2, c.width, 8, 8)
    with torch.no_grad():
        ours = clip(grid)
        cls = clip.class_embedding.expand(2, 1, -1)
        embeds = torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)
        embeds = embeds + interpolate_positions(clip.position_embedding, 8)
        theirs = native.encoder(inputs_embeds=native.pre_layrnorm(embeds)).last_hidden_state
    assert (ours - theirs).abs().max() <= 1e-4 * max(1.0, float(theirs.abs().max()))
