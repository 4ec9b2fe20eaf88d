"""Presets, config round trips, and the official preset's exact parameter inventory."""

from __future__ import annotations

from collections import Counter

import pytest

from opticmem.encoder.config import (
    MAX_EMBEDDING_ELEMENTS,
    MAX_VOCAB_SIZE,
    MIN_POSITIONS,
    ModelConfig,
    preset,
)
from opticmem.encoder.errors import ConfigError
from opticmem.encoder.model import build_model
from opticmem.encoder.official import official_key_list, to_official, to_ours


def expected_official_keys() -> list[str]:
    """The released checkpoint's tensor names, enumerated from the facts file (§2)."""
    keys = ["model.sam_model.pos_embed", "model.sam_model.patch_embed.proj.weight",
            "model.sam_model.patch_embed.proj.bias"]
    for i in range(12):
        b = f"model.sam_model.blocks.{i}."
        for mod in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.lin1", "mlp.lin2"):
            keys += [b + mod + ".weight", b + mod + ".bias"]
        keys += [b + "attn.rel_pos_h", b + "attn.rel_pos_w"]
    keys += ["model.sam_model.neck.0.weight", "model.sam_model.neck.1.weight",
             "model.sam_model.neck.1.bias", "model.sam_model.neck.2.weight",
             "model.sam_model.neck.3.weight", "model.sam_model.neck.3.bias",
             "model.sam_model.net_2.weight", "model.sam_model.net_3.weight"]
    v = "model.vision_model."
    keys += [v + "embeddings.class_embedding", v + "embeddings.patch_embedding.weight",
             v + "embeddings.position_embedding.weight", v + "pre_layrnorm.weight",
             v + "pre_layrnorm.bias"]
    for i in range(24):
        b = f"{v}transformer.layers.{i}."
        for mod in ("layer_norm1", "layer_norm2", "self_attn.qkv_proj", "self_attn.out_proj",
                    "mlp.fc1", "mlp.fc2"):
            keys += [b + mod + ".weight", b + mod + ".bias"]
    keys += ["model.projector.layers.weight", "model.projector.layers.bias",
             "model.image_newline", "model.view_seperator", "model.embed_tokens.weight",
             "model.norm.weight", "lm_head.weight"]
    for i in range(12):
        b = f"model.layers.{i}."
        keys += [b + "input_layernorm.weight", b + "post_attention_layernorm.weight"]
        keys += [f"{b}self_attn.{p}_proj.weight" for p in "qkvo"]
        mats = ("gate_proj", "up_proj", "down_proj")
        if i == 0:
            keys += [f"{b}mlp.{m}.weight" for m in mats]
        else:
            keys.append(b + "mlp.gate.weight")
            keys += [f"{b}mlp.experts.{e}.{m}.weight" for e in range(64) for m in mats]
            keys += [f"{b}mlp.shared_experts.{m}.weight" for m in mats]
    return keys


def test_official_preset_matches_released_checkpoint_on_meta() -> None:
    model = build_model(preset("official"), device="meta")
    params = dict(model.named_parameters())
    assert all(p.is_meta for p in params.values())
    assert sum(p.numel() for p in params.values()) == 3_336_106_240
    assert len(model.state_dict()) == 2_710
    names = official_key_list()
    assert sorted(names) == sorted(expected_official_keys())
    prefixes = Counter(
        "sam" if n.startswith("model.sam_model.") else
        "vision" if n.startswith("model.vision_model.") else
        "layers" if n.startswith("model.layers.") else "other"
        for n in names
    )
    assert prefixes == {"sam": 179, "vision": 293, "layers": 2231, "other": 7}


def test_official_shapes_follow_the_facts() -> None:
    sd = build_model(preset("official"), device="meta").state_dict()
    shape = {to_official(k): tuple(v.shape) for k, v in sd.items()}
    assert shape["model.sam_model.pos_embed"] == (1, 64, 64, 768)
    assert shape["model.sam_model.blocks.2.attn.rel_pos_h"] == (127, 64)
    assert shape["model.sam_model.blocks.0.attn.rel_pos_h"] == (27, 64)
    assert shape["model.sam_model.net_2.weight"] == (512, 256, 3, 3)
    assert shape["model.sam_model.net_3.weight"] == (1024, 512, 3, 3)
    assert shape["model.vision_model.embeddings.position_embedding.weight"] == (257, 1024)
    qkv = "model.vision_model.transformer.layers.0.self_attn.qkv_proj.weight"
    assert shape[qkv] == (3072, 1024)
    assert shape["model.projector.layers.weight"] == (1280, 2048)
    assert shape["model.layers.1.mlp.gate.weight"] == (64, 1280)
    assert shape["model.layers.1.mlp.experts.63.down_proj.weight"] == (1280, 896)
    assert shape["model.layers.1.mlp.shared_experts.gate_proj.weight"] == (1792, 1280)
    assert shape["model.layers.0.mlp.gate_proj.weight"] == (6848, 1280)
    assert shape["lm_head.weight"] == (129280, 1280)


def test_key_map_round_trips() -> None:
    for name in expected_official_keys():
        assert to_official(to_ours(name)) == name


@pytest.mark.parametrize("name,limit", [("bundled", 22_000_000), ("test", 1_500_000)])
def test_small_presets_fit_their_budget(name: str, limit: int) -> None:
    n = build_model(preset(name), device="meta").num_parameters()
    assert 0 < n <= limit


def test_bundled_preset_sizes() -> None:
    cfg = preset("bundled")
    assert (cfg.sam.width, cfg.sam.depth, cfg.sam.heads) == (192, 4, 3)
    assert cfg.sam.global_attn_indexes == (1, 3)
    assert (cfg.compressor.mid_channels, cfg.compressor.out_channels) == (256, 384)
    assert cfg.vision_dim == 768 and cfg.embed_dim == 384
    d = cfg.decoder
    assert (d.layers, d.heads, d.head_dim) == (4, 6, 64)
    assert (d.routed_experts, d.experts_per_token, d.shared_experts) == (6, 2, 1)
    assert (d.bos_token_id, d.eos_token_id, d.pad_token_id, d.image_token_id) == (0, 1, 2, 3)
    assert preset("official").decoder.image_token_id == 128815


@pytest.mark.parametrize("name", ["official", "bundled", "test"])
def test_config_round_trips_through_dict(name: str) -> None:
    cfg = preset(name)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_configs_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
    data = preset("test").to_dict()
    data["decoder"]["experts_per_token"] = 9
    with pytest.raises(ConfigError, match="experts_per_token"):
        ModelConfig.from_dict(data)
    data = preset("test").to_dict()
    data["decoder"]["colour"] = "red"
    with pytest.raises(ConfigError, match="colour"):
        ModelConfig.from_dict(data)
    data = preset("test").to_dict()
    data["compressor"]["out_channels"] = 48
    with pytest.raises(ConfigError, match=r"clip\.width"):
        ModelConfig.from_dict(data)
    data = preset("test").to_dict()
    data["fusion_norm"] = "false"  # read as bool("false"): the fusion norm switched on
    with pytest.raises(ConfigError, match="fusion_norm must be true or false"):
        ModelConfig.from_dict(data)



def test_a_config_missing_a_field_or_section_is_refused() -> None:
    """What a config left out took the official model's value: a 'test' config without
    decoder.vocab_size was blamed on a shard's shape, one without a name was 'official'."""
    for path in (("decoder", "vocab_size"), ("sam", "depth"), ("decoder",), ("name",)):
        data = preset("test").to_dict()
        holder = data if len(path) == 1 else data[path[0]]
        del holder[path[-1]]
        with pytest.raises(ConfigError, match=f"lacks .*{'.'.join(path)}"):
            ModelConfig.from_dict(data)
    for name in (None, "", 5):
        data = {**preset("test").to_dict(), "name": name}
        with pytest.raises(ConfigError, match="name must be a non-empty string"):
            ModelConfig.from_dict(data)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [("sam", "heads", 0), ("clip", "heads", 0), ("decoder", "heads", 0),
     ("decoder", "layers", "2"), ("decoder", "hidden_size", None), ("sam", "width", 32.0),
     ("sam", "global_attn_indexes", "1"), ("decoder", "rope_theta", "1e4"),
     ("decoder", "norm_topk_prob", 1), ("decoder", "vocab_size", True)],
)
def test_mistyped_or_zero_sizes_raise_config_error(section: str, field: str, value: object) -> None:
    # Zero heads used to escape as ZeroDivisionError, a string size as TypeError.
    data = preset("test").to_dict()
    data[section][field] = value
    with pytest.raises(ConfigError, match=rf"{section}\.{field}"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [("decoder", "rope_theta", 0), ("decoder", "rope_theta", -5.0),
     ("decoder", "norm_eps", -1.0), ("sam", "norm_eps", 0.0), ("clip", "norm_eps", -1e-5),
     ("sam", "mlp_ratio", 0.0), ("decoder", "routed_scaling_factor", float("nan")),
     ("decoder", "rope_theta", float("inf")), ("decoder", "max_positions", 0),
     ("decoder", "max_positions", -3)],
)
def test_settings_no_tensor_shape_depends_on_are_checked(
    section: str, field: str, value: object
) -> None:
    # No weight's shape depends on these, so a config.json holding them loaded, and then
    # read every page as NaN (confidence NaN, empty text) or read nothing at all.
    data = preset("test").to_dict()
    data[section][field] = value
    with pytest.raises(ConfigError, match=rf"{section}\.{field} must be"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [("max_positions", 1, f"≥ {MIN_POSITIONS}"), ("max_positions", MIN_POSITIONS - 1,
                                                   f"≥ {MIN_POSITIONS}"),
     ("routed_scaling_factor", 0, "> 0"), ("routed_scaling_factor", -1.0, "> 0"),
     ("routed_experts", -1, "≥ 0"), ("shared_experts", -1, "≥ 0"),
     ("aux_loss_alpha", -0.001, "≥ 0"), ("moe_intermediate", 0, "≥ 1"),
     ("moe_intermediate", -4, "≥ 1"), ("dense_intermediate", 0, "≥ 1"), ("layers", 0, "≥ 1"),
     ("experts_per_token", 5, "in 1..4"), ("experts_per_token", 0, "in 1..4"),
     ("first_k_dense", 3, "in 0..2")],
)
def test_decoder_settings_out_of_range_name_field_value_and_range(
    field: str, value: object, allowed: str
) -> None:
    """All of these loaded (or failed deep in torch, or were blamed on another field):
    max_positions 1 read one token per page, a routed_scaling_factor of 0 or less dropped
    or flipped the experts' output, shared_experts -1 silently dropped the shared MLP,
    routed_experts -1 was reported as a bad experts_per_token, a negative
    moe_intermediate was torch's "negative dimension"."""
    data = preset("test").to_dict()
    data["decoder"][field] = value
    with pytest.raises(ConfigError, match=rf"decoder\.{field} must be {allowed}.*got {value}"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("vocab_size", 10**12, "decoder.vocab_size must be in 1..4,194,304"),
     ("vocab_size", MAX_VOCAB_SIZE + 1, "got 4,194,305"),
     ("hidden_size", 10**9, r"decoder.vocab_size × decoder.hidden_size must be at most "
                            r"8,589,934,592 .* got 4,096 × 1,000,000,000")],
)
def test_absurd_embedding_sizes_are_refused_before_anything_is_built(
    field: str, value: int, message: str
) -> None:
    """A config.json of vocab_size 10**12 loaded, and building the model failed with
    torch's C++ allocation trace (256 TB asked for)."""
    data = preset("test").to_dict()
    data["decoder"][field] = value
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(data)
    data = preset("test").to_dict()
    data["decoder"]["vocab_size"] = MAX_VOCAB_SIZE  # the bound itself is a size
    assert ModelConfig.from_dict(data).decoder.vocab_size == MAX_VOCAB_SIZE
    official = preset("official").decoder
    assert official.vocab_size * official.hidden_size * 50 < MAX_EMBEDDING_ELEMENTS


@pytest.mark.parametrize("name", ["official", "bundled", "test"])
def test_every_preset_passes_the_decoder_range_checks(name: str) -> None:
    d = preset(name).decoder
    assert d.max_positions >= MIN_POSITIONS and d.routed_scaling_factor > 0
    assert 0 < d.experts_per_token <= d.routed_experts
    assert ModelConfig.from_dict(preset(name).to_dict()) == preset(name)


def test_the_bundled_config_json_still_loads() -> None:
    from opticmem.encoder.bundled import weights_dir
    from opticmem.encoder.checkpoint import read_config

    assert read_config(weights_dir()) == preset("bundled")


@pytest.mark.parametrize(
    ("field", "value"),
    [("frequencies", "abc"), ("frequencies", (1.5, 2, 4)), ("ahead", "8"), ("below", None),
     ("point_dim", 0)],
)
def test_mistyped_aligner_settings_raise_config_error(field: str, value: object) -> None:
    # The align section went unchecked: frequencies "abc" loaded with the checkpoint and
    # failed the first encode with a TypeError; (1.5, 2, 4) read every page silently.
    data = preset("test").to_dict()
    data["align"][field] = value
    with pytest.raises(ConfigError, match=rf"align\.{field}"):
        ModelConfig.from_dict(data)
