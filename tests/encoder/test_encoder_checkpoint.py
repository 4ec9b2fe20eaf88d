"""Sharded safetensors checkpoints (ours and the official layout): strict, typed errors."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from opticmem.encoder.byte_fallback import byte_fallback_tokenizer, read_tokenizer
from opticmem.encoder.checkpoint import (
    INDEX_FILE,
    dequantize_int8,
    load_checkpoint,
    quantize_int8,
    read_index,
    save_checkpoint,
)
from opticmem.encoder.config import preset
from opticmem.encoder.errors import CheckpointError, InputError
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.ocr import OCRCodec
from opticmem.encoder.official import (
    load_official,
    load_official_tokenizer,
    to_official,
    with_official_layout,
)


@pytest.fixture(scope="module")
def model() -> OCRModel:
    return build_model(preset("test"), seed=4)


@pytest.fixture()
def saved(model: OCRModel, tmp_path: Path) -> Path:
    return save_checkpoint(model, tmp_path / "ckpt", max_shard_bytes=256 * 1024)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_and_load_round_trip_with_shards(model: OCRModel, saved: Path) -> None:
    shards = sorted(saved.glob("model-*.safetensors"))
    assert len(shards) > 1
    weight_map, meta = read_index(saved)
    per_file = {p.name: sum(f == p.name for f in weight_map.values()) for p in shards}
    # Within the limit (plus header), unless one tensor alone is larger.
    assert all(
        p.stat().st_size <= 256 * 1024 + 16 * 1024 or per_file[p.name] == 1 for p in shards
    )
    assert set(weight_map) == set(model.state_dict())
    assert meta["format"] == "opticmem" and set(meta["shards"]) == {p.name for p in shards}
    loaded = load_checkpoint(saved, device="cpu")
    assert loaded.cfg == model.cfg
    assert same_weights(model, loaded)
    pixels = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        assert torch.equal(model.encode_grid(pixels), loaded.encode_grid(pixels))


def test_default_shard_limit_is_16_mib(tmp_path: Path) -> None:
    m = build_model(preset("bundled"), seed=0)
    out = save_checkpoint(m, tmp_path / "b", dtype=torch.bfloat16)
    sizes = [p.stat().st_size for p in out.glob("model-*.safetensors")]
    assert max(sizes) <= 16 * 1024 * 1024 + 64 * 1024
    assert sum(sizes) < 44 * 1024 * 1024  # bf16 bundled weights ship under 44 MB
    back = load_checkpoint(out, device="cpu")
    assert back.decoder.lm_head.weight.dtype == torch.float32
    ref = m.decoder.lm_head.weight.to(torch.bfloat16).float()
    assert torch.equal(back.decoder.lm_head.weight, ref)


def test_bf16_packed_views_are_saved_as_independent_tensors(tmp_path: Path) -> None:
    m = build_model(preset("test"), seed=1)
    with torch.inference_mode():
        m.decoder(torch.randn(1, 3, 64))  # packs fused weights into shared storage
    out = save_checkpoint(m, tmp_path / "p")
    assert same_weights(m, load_checkpoint(out, device="cpu"))


@pytest.mark.parametrize("shape", [(40, 64), (3, 5, 48), (16, 8, 3, 3), (7, 31)])
def test_int8_rows_come_back_within_half_a_step(shape: tuple[int, ...]) -> None:
    t = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3
    t[0] = 0.0  # an all-zero row keeps a usable scale
    values, scale = quantize_int8(t)
    assert values.dtype == torch.int8 and values.shape == t.shape
    assert scale.shape == (t.shape[:-1] if shape[-1] >= 32 else t.shape[:1])
    back = dequantize_int8(values, scale)
    step = scale.reshape(*scale.shape, *([1] * (t.ndim - scale.ndim)))
    assert bool(((back - t).abs() <= step / 2 + 1e-6).all())
    assert bool((back[0] == 0).all())


def test_an_int8_checkpoint_is_half_the_bf16_one_and_loads_as_floats(
    model: OCRModel, tmp_path: Path
) -> None:
    bf16 = save_checkpoint(model, tmp_path / "bf16", dtype=torch.bfloat16)
    int8 = save_checkpoint(model, tmp_path / "int8", dtype=torch.bfloat16, quantize="int8")
    size = {d: sum(p.stat().st_size for p in d.glob("model-*.safetensors"))
            for d in (bf16, int8)}
    assert size[int8] < 0.6 * size[bf16]
    weight_map, meta = read_index(int8)
    assert set(weight_map) == set(model.state_dict())  # scales are not model tensors
    scales = meta["quantization"]["scales"]
    assert meta["quantization"]["format"] == "int8-rowwise" and "decoder.lm_head.weight" in scales
    assert "decoder.norm.weight" not in scales  # small and 1-D: kept as bf16
    assert "aligner.point.weight" not in scales  # LayoutAligner.FLOAT_WEIGHTS: kept as bf16
    loaded = load_checkpoint(int8, device="cpu")
    assert loaded.decoder.lm_head.weight.dtype == torch.float32
    for name, ref in model.state_dict().items():
        got = loaded.state_dict()[name]
        if name in scales:
            assert torch.allclose(got, ref, atol=float(ref.abs().max()) / 250), name
        elif ref.is_floating_point():
            assert torch.equal(got, ref.to(torch.bfloat16).float()), name
    pixels = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        a, b = model.encode_grid(pixels), loaded.encode_grid(pixels)
    assert float((a - b).norm() / a.norm()) < 0.05


def test_int8_checkpoint_damage_names_file_and_key(model: OCRModel, tmp_path: Path) -> None:
    out = save_checkpoint(model, tmp_path / "q", quantize="int8")
    weight_map, meta = read_index(out)
    key = "decoder.lm_head.weight"
    scale = meta["quantization"]["scales"][key]
    fname = weight_map[key]
    from safetensors.torch import load_file
    original = load_file(str(out / fname))
    original_bytes = (out / fname).read_bytes()

    def rewrite(tensors: dict[str, torch.Tensor]) -> None:
        save_file(tensors, str(out / fname))

    rewrite({k: v for k, v in original.items() if k != scale})
    with pytest.raises(CheckpointError, match="not in the tensor's shard") as info:
        load_checkpoint(out, device="cpu", verify=False)
    assert info.value.key == key and info.value.path == str(out / fname)
    rewrite({**original, scale: original[scale][:-1]})
    with pytest.raises(CheckpointError, match="does not fit") as info:
        load_checkpoint(out, device="cpu", verify=False)
    assert info.value.key == key
    rewrite({**original, key: original[key].float()})
    with pytest.raises(CheckpointError, match="where an int8 tensor was recorded") as info:
        load_checkpoint(out, device="cpu", verify=False)
    assert info.value.key == key
    rewrite({**original, scale: torch.full_like(original[scale], float("inf"))})
    with pytest.raises(CheckpointError, match="NaN or infinite") as info:
        load_checkpoint(out, device="cpu", verify=False)
    assert info.value.key == key
    (out / fname).write_bytes(original_bytes)
    index = json.loads((out / INDEX_FILE).read_text())
    index["metadata"]["quantization"]["format"] = "int4-grouped"
    (out / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"unsupported metadata\.quantization 'int4-grouped'"):
        load_checkpoint(out, device="cpu")
    index["metadata"]["quantization"] = {"format": "int8-rowwise", "scales": {"x.weight": "y"}}
    (out / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="weight map lacks") as info:
        load_checkpoint(out, device="cpu")
    assert info.value.key == "x.weight"


def test_an_unknown_quantization_is_refused_before_writing(model: OCRModel, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="quantize must be None or 'int8'"):
        save_checkpoint(model, tmp_path / "x", quantize="int4")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_truncated_shard_names_file_and_key(saved: Path) -> None:
    weight_map, _ = read_index(saved)
    victim = sorted(set(weight_map.values()))[1]
    path = saved / victim
    path.write_bytes(path.read_bytes()[:-100])
    first_key = next(k for k, f in weight_map.items() if f == victim)
    for verify in (True, False):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(saved, device="cpu", verify=verify)
        assert info.value.path == str(path) and info.value.key == first_key
        assert victim in str(info.value) and first_key in str(info.value)


def test_corrupt_bytes_are_caught_by_the_digest(saved: Path) -> None:
    weight_map, _ = read_index(saved)
    victim = sorted(set(weight_map.values()))[0]
    data = bytearray((saved / victim).read_bytes())
    data[-10] ^= 0xFF
    (saved / victim).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(saved, device="cpu")
    assert info.value.path == str(saved / victim) and info.value.key is not None


def test_a_shard_the_index_has_no_digest_for_blames_the_index(saved: Path) -> None:
    # It was "shard is corrupt (SHA-256 differs from the index)", naming an intact shard.
    index = json.loads((saved / INDEX_FILE).read_text())
    shard = sorted(index["metadata"]["shards"])[0]
    del index["metadata"]["shards"][shard]
    (saved / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"index has no SHA-256 for shard '{shard}'") as info:
        load_checkpoint(saved, device="cpu")
    assert info.value.path == str(saved / INDEX_FILE)


def test_garbage_header_names_file_and_key(saved: Path) -> None:
    weight_map, _ = read_index(saved)
    victim = sorted(set(weight_map.values()))[0]
    (saved / victim).write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(saved, device="cpu", verify=False)
    assert info.value.path == str(saved / victim) and info.value.key in weight_map


def test_wrong_shape_names_file_and_key(model: OCRModel, saved: Path) -> None:
    weight_map, _ = read_index(saved)
    key = "vision.projector.weight"
    fname = weight_map[key]
    tensors = {k: model.state_dict()[k].clone() for k, f in weight_map.items() if f == fname}
    tensors[key] = torch.zeros(3, 3)
    save_file(tensors, str(saved / fname))
    with pytest.raises(CheckpointError, match="shape") as info:
        load_checkpoint(saved, device="cpu", verify=False)
    assert info.value.key == key and info.value.path == str(saved / fname)


def test_nan_weights_name_file_and_key(model: OCRModel, saved: Path) -> None:
    # A checkpoint of a diverged run loaded, and encode() returned NaN vision tokens that
    # a memory could cache before decode() refused them.
    weight_map, _ = read_index(saved)
    key = "vision.projector.weight"
    fname = weight_map[key]
    tensors = {k: model.state_dict()[k].clone() for k, f in weight_map.items() if f == fname}
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(saved / fname))
    with pytest.raises(CheckpointError, match="NaN or infinite") as info:
        load_checkpoint(saved, device="cpu", verify=False)
    assert info.value.key == key and info.value.path == str(saved / fname)


def test_missing_shard_and_missing_key(saved: Path) -> None:
    weight_map, _ = read_index(saved)
    index = json.loads((saved / INDEX_FILE).read_text())
    dropped = "decoder.norm.weight"
    del index["weight_map"][dropped]
    (saved / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="missing") as info:
        load_checkpoint(saved, device="cpu", verify=False)
    assert info.value.key == dropped and info.value.path == str(saved / INDEX_FILE)
    index["weight_map"][dropped] = weight_map[dropped]
    (saved / INDEX_FILE).write_text(json.dumps(index))
    victim = weight_map["decoder.lm_head.weight"]
    (saved / victim).unlink()
    with pytest.raises(CheckpointError, match="shard file missing") as info:
        load_checkpoint(saved, device="cpu", verify=False)
    assert info.value.path == str(saved / victim)


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", "sub/x.safetensors",
                                   "..", "", "a\\b.safetensors"])
def test_a_shard_outside_the_checkpoint_folder_is_refused(saved: Path, shard: str) -> None:
    # Such names used to be opened (or hashed) wherever they led, then fail as bad shards.
    index = json.loads((saved / INDEX_FILE).read_text())
    index["weight_map"]["decoder.norm.weight"] = shard
    (saved / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a file of the checkpoint's folder") as info:
        load_checkpoint(saved, device="cpu")
    assert info.value.path == str(saved / INDEX_FILE)


def test_unexpected_key_and_bad_json(saved: Path) -> None:
    index = json.loads((saved / INDEX_FILE).read_text())
    shard = next(iter(index["weight_map"].values()))
    index["weight_map"]["vision.extra_head.weight"] = shard
    (saved / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="unexpected") as info:
        load_checkpoint(saved, device="cpu", verify=False)
    assert info.value.key == "vision.extra_head.weight"
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON") as info:
        load_checkpoint(saved, device="cpu")
    assert info.value.path == str(saved / "config.json")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(saved / "nope")


@pytest.mark.parametrize("name", ["config.json", INDEX_FILE])
def test_deeply_nested_json_names_the_file(saved: Path, name: str) -> None:
    """JSON nested past Python's recursion limit used to escape as a bare RecursionError."""
    (saved / name).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="JSON") as info:
        load_checkpoint(saved, device="cpu")
    assert info.value.path == str(saved / name)


@pytest.mark.parametrize(("field", "value"), [("hidden_size", "x"), ("hidden_size", -5),
                                              ("layers", 1.5)])
def test_config_with_unbuildable_sizes_names_the_config_file(
    saved: Path, field: str, value: object
) -> None:
    """A config.json whose sizes are not sizes used to escape as a bare TypeError or
    RuntimeError from torch; it is a CheckpointError naming the file (and the field, when
    the config's own checks catch it)."""
    path = saved / "config.json"
    data = json.loads(path.read_text())
    data["model"]["decoder"][field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=f"config describes no model|decoder.{field}") as info:
        load_checkpoint(saved, device="cpu")
    assert info.value.path == str(path)


def test_a_huge_vocabulary_in_config_json_is_one_line_naming_field_and_file(
    saved: Path,
) -> None:
    """vocab_size 10**12 loaded and failed building the embedding, in torch's C++
    allocation trace ("DefaultCPUAllocator: can't allocate memory ... 256000000000000")."""
    path = saved / "config.json"
    data = json.loads(path.read_text())
    data["model"]["decoder"]["vocab_size"] = 10**12
    path.write_text(json.dumps(data))
    for load in (lambda: load_checkpoint(saved, device="cpu"),
                 lambda: OCRCodec.from_pretrained(saved, device="cpu")):
        with pytest.raises(CheckpointError, match=r"decoder\.vocab_size must be in") as info:
            load()
        assert info.value.path == str(path) and "\n" not in str(info.value)
        assert "allocate" not in str(info.value)
        # validate()'s own prefix is not said twice
        assert str(info.value).count("invalid model config") == 1


@pytest.mark.parametrize("dtype", ["bfloat16", torch.int64])
def test_a_dtype_that_is_not_a_float_type_is_the_callers_error(saved: Path, dtype: object) -> None:
    """It used to be reported as a CheckpointError saying config.json describes no model."""
    with pytest.raises(InputError, match="dtype must be a floating-point torch"):
        load_checkpoint(saved, device="cpu", dtype=dtype)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", ["bfloat16", torch.int8])
def test_saving_over_a_checkpoint_with_a_dtype_that_is_not_a_float_type_keeps_it(
    model: OCRModel, saved: Path, dtype: object
) -> None:
    """``torch.int8`` used to write a checkpoint no model loads, and ``"bfloat16"`` to fail
    after the old shards were deleted: either way the good checkpoint there was lost."""
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    with pytest.raises(InputError, match="dtype must be a floating-point torch"):
        save_checkpoint(model, saved, dtype=dtype)  # type: ignore[arg-type]
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert same_weights(load_checkpoint(saved, device="cpu"), model)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_a_device_that_is_not_there_is_not_blamed_on_the_config(saved: Path) -> None:
    # The sizes of config.json build a model; the device cannot hold it (on a one-GPU
    # machine, "cuda:1" does the same).
    with pytest.raises(RuntimeError) as info:
        load_checkpoint(saved, device="mps")
    assert not isinstance(info.value, CheckpointError)
    assert "config.json" not in str(info.value)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
def test_integer_tensor_for_a_float_parameter_names_file_and_key(
    model: OCRModel, saved: Path, dtype: torch.dtype
) -> None:
    # It used to be cast to float and loaded: a wrong tensor taken for a precision.
    weight_map, _ = read_index(saved)
    key = "vision.projector.weight"
    fname = weight_map[key]
    tensors = {k: model.state_dict()[k].clone() for k, f in weight_map.items() if f == fname}
    tensors[key] = tensors[key].to(dtype)
    save_file(tensors, str(saved / fname))
    with pytest.raises(CheckpointError, match="dtype") as info:
        load_checkpoint(saved, device="cpu", verify=False)
    assert info.value.key == key and info.value.path == str(saved / fname)


def test_codec_from_pretrained_uses_a_tokenizer_file_when_present(
    model: OCRModel, saved: Path
) -> None:
    img = [Image.new("L", (512, 512), 255)]
    plain = OCRCodec.from_pretrained(saved, device="cpu")
    assert plain.tokenizer_source == "shipped" and plain.name.startswith("opticmem:test:")
    byte_fallback_tokenizer(model.cfg.decoder).save(str(saved / "tokenizer.json"))
    with_file = OCRCodec.from_pretrained(saved, device="cpu")
    assert with_file.tokenizer_source == "given" and not with_file.fallback_tokenizer
    a = plain.encode(img, "tiny")
    assert plain.decode(a, max_new_tokens=3)[0].tokens <= 3
    (saved / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match="tokenizer"):
        OCRCodec.from_pretrained(saved, device="cpu")
    # A tokenizer of a larger vocabulary used to load, then fail the first decode with an
    # IndexError from the embedding.
    byte_fallback_tokenizer(replace(model.cfg.decoder, vocab_size=5000)).save(
        str(saved / "tokenizer.json"))
    with pytest.raises(CheckpointError, match="vocabulary of 4096") as info:
        OCRCodec.from_pretrained(saved, device="cpu")
    assert info.value.path == str(saved / "tokenizer.json")
    with pytest.raises(InputError, match="vocabulary"):
        OCRCodec(model, read_tokenizer(saved / "tokenizer.json"), name="mismatched")


@pytest.mark.parametrize("vocab", [None, 5000, 300])
def test_a_bad_tokenizer_in_our_checkpoint_fails_before_loading_weights(
    model: OCRModel, saved: Path, monkeypatch: pytest.MonkeyPatch, vocab: int | None
) -> None:
    """from_pretrained built the model and hashed and loaded every shard, and only then
    read tokenizer.json and found it corrupt or of another model. One of a smaller
    vocabulary (300) loaded, and then every id the model read past it vanished from the
    text: 20 tokens decoded to ''."""
    tok = saved / "tokenizer.json"
    if vocab is None:
        tok.write_text("{")
    else:
        byte_fallback_tokenizer(replace(model.cfg.decoder, vocab_size=vocab)).save(str(tok))

    def weights(*args: object, **kwargs: object) -> OCRModel:
        raise AssertionError("the weights were loaded before the tokenizer was read")

    monkeypatch.setattr("opticmem.encoder.ocr.load_checkpoint", weights)
    with pytest.raises(CheckpointError, match="tokenizer") as info:
        OCRCodec.from_pretrained(saved, device="cpu")
    assert info.value.path == str(tok)


@pytest.mark.parametrize(("ids", "renamed", "message"), [
    ({"image_token_id": 7}, False,
     "special token <image> has id 7, the model config's image_token_id is 3"),
    ({"bos_token_id": 3, "image_token_id": 0}, False,
     "special token <bos> has id 3, the model config's bos_token_id is 0"),
    # specials of other names at the vocabulary's end: id 0 is the byte 0 there (Ā)
    ({"bos_token_id": 4092, "eos_token_id": 4093, "pad_token_id": 4094,
      "image_token_id": 4095}, True,
     "the model config's bos_token_id is 0, but the tokenizer holds the ordinary token 'Ā'"),
])
def test_a_tokenizer_whose_special_ids_differ_from_the_config_is_refused(
    model: OCRModel, saved: Path, monkeypatch: pytest.MonkeyPatch,
    ids: dict[str, int], renamed: bool, message: str,
) -> None:
    """A tokenizer.json with <image> at 7 (the config's image_token_id 3), or <bos> and
    <image> swapped, fit the vocabulary, gave text back and loaded: prompts then put
    another token where the vision slots or BOS go, and text holding the config's image
    id was read as an image slot. Refused before any weight is loaded."""
    tok = saved / "tokenizer.json"
    byte_fallback_tokenizer(replace(model.cfg.decoder, **ids)).save(str(tok))
    if renamed:
        text = tok.read_text(encoding="utf-8")
        for name in ("bos", "eos", "pad", "image"):
            text = text.replace(f'"<{name}>"', f'"[{name.upper()}]"')
        tok.write_text(text, encoding="utf-8")

    def weights(*args: object, **kwargs: object) -> OCRModel:
        raise AssertionError("the weights were loaded before the tokenizer was checked")

    with monkeypatch.context() as patch:
        patch.setattr("opticmem.encoder.ocr.load_checkpoint", weights)
        with pytest.raises(CheckpointError, match=re.escape(message)) as info:
            OCRCodec.from_pretrained(saved, device="cpu")
    assert info.value.path == str(tok) and str(tok) in str(info.value)
    byte_fallback_tokenizer(model.cfg.decoder).save(str(tok))  # the model's own ids load
    assert OCRCodec.from_pretrained(saved, device="cpu").tokenizer_source == "given"


@pytest.mark.parametrize(("part", "value", "came_back"), [
    ("decoder", None, "ĠìĦľìļ¸"),  # byte symbols: " 서울" as the BPE stores it
    ("pre_tokenizer", None, "Page1:Hello,"),  # spaces gone
    ("normalizer", {"type": "Lowercase"}, "page 1: hello"),
])
def test_a_tokenizer_that_does_not_give_text_back_is_refused(
    saved: Path, part: str, value: object, came_back: str
) -> None:
    """A tokenizer.json with its decoder dropped (or its pre-tokenizer, or a normaliser
    added) fits the vocabulary and loaded: every page then read back as byte symbols,
    without spaces or lowercased, and nothing said so."""
    from opticmem.encoder.bundled import BUNDLED_TOKENIZER

    data = json.loads(BUNDLED_TOKENIZER.read_text(encoding="utf-8"))
    data[part] = value
    tok = saved / "tokenizer.json"
    tok.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError, match="does not give text back") as info:
        OCRCodec.from_pretrained(saved, device="cpu")
    assert came_back in str(info.value) and info.value.path == str(tok)
    tok.write_bytes(BUNDLED_TOKENIZER.read_bytes())  # the shipped one round-trips
    assert OCRCodec.from_pretrained(saved, device="cpu").tokenizer_source == "given"


def test_a_folder_of_pickles_with_a_tokenizer_is_refused_saying_why(tmp_path: Path) -> None:
    # The tokenizer, now read first, must not put a complaint about config.json before it.
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    byte_fallback_tokenizer(preset("test").decoder).save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(CheckpointError, match="pickle weights"):
        OCRCodec.from_pretrained(tmp_path, device="cpu")


# ---------------------------------------------------------------- official key layout


def write_official_layout(model: OCRModel, root: Path, shards: int = 2) -> dict[str, str]:
    """A small checkpoint under the released names, split like the hub's index layout."""
    root.mkdir(parents=True, exist_ok=True)
    items = [(to_official(k), v.detach().to(torch.bfloat16).clone())
             for k, v in model.state_dict().items()]
    weight_map: dict[str, str] = {}
    per = -(-len(items) // shards)
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:06d}.safetensors"
        part = dict(items[i * per : (i + 1) * per])
        save_file(part, str(root / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    (root / INDEX_FILE).write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    d = model.cfg.decoder
    (root / "config.json").write_text(json.dumps({
        "model_type": "deepseek_vl_v2",
        "language_config": {
            "vocab_size": d.vocab_size, "hidden_size": d.hidden_size,
            "num_hidden_layers": d.layers, "n_routed_experts": d.routed_experts,
            "num_experts_per_tok": d.experts_per_token, "first_k_dense_replace": 1,
        },
    }))
    byte_fallback_tokenizer(d).save(str(root / "tokenizer.json"))
    return weight_map


def test_tiny_checkpoint_in_the_official_layout_loads_strictly(tmp_path: Path) -> None:
    cfg = with_official_layout(preset("test"))
    src = build_model(cfg, seed=7)
    weight_map = write_official_layout(src, tmp_path / "dso")
    assert "model.sam_model.net_2.weight" in weight_map
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in weight_map
    assert "model.view_seperator" in weight_map and "lm_head.weight" in weight_map
    loaded = load_official(tmp_path / "dso", config=cfg, device="cpu")
    ref = {k: v.to(torch.bfloat16).float() for k, v in src.state_dict().items()}
    got = loaded.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    tok = load_official_tokenizer(tmp_path / "dso")
    assert tok.get_vocab_size() == cfg.decoder.vocab_size


def test_official_layout_mismatches_raise_typed_errors(tmp_path: Path) -> None:
    cfg = with_official_layout(preset("test"))
    src = build_model(cfg, seed=7)
    root = tmp_path / "dso"
    weight_map = write_official_layout(src, root)
    # A config.json that disagrees with the architecture.
    conf = json.loads((root / "config.json").read_text())
    conf["language_config"]["n_routed_experts"] = 64
    (root / "config.json").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match="n_routed_experts"):
        load_official(root, config=cfg, device="cpu")
    write_official_layout(src, root)
    # A name the key map does not know.
    index = json.loads((root / INDEX_FILE).read_text())
    index["weight_map"]["model.sam_model.mystery"] = next(iter(weight_map.values()))
    (root / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="key map") as info:
        load_official(root, config=cfg, device="cpu")
    assert info.value.key == "model.sam_model.mystery"
    write_official_layout(src, root)
    # A wrong-shaped tensor, named with its official key.
    key = "model.layers.1.mlp.gate.weight"
    fname = weight_map[key]
    part = {k: src.state_dict()[k2].to(torch.bfloat16).clone()
            for k2 in src.state_dict() for k in [to_official(k2)] if weight_map[k] == fname}
    part[key] = torch.zeros(5, 64, dtype=torch.bfloat16)
    save_file(part, str(root / fname))
    with pytest.raises(CheckpointError, match="shape") as info:
        load_official(root, config=cfg, device="cpu")
    assert info.value.key == key and info.value.path == str(root / fname)
    # A missing tensor is named as the checkpoint names it, not by our parameter name.
    write_official_layout(src, root)
    index = json.loads((root / INDEX_FILE).read_text())
    del index["weight_map"]["model.norm.weight"]
    (root / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="missing") as info:
        load_official(root, config=cfg, device="cpu")
    assert info.value.key == "model.norm.weight"
    # So is an integer tensor where the model has floats (no digests to catch it here).
    write_official_layout(src, root)
    part = {k: src.state_dict()[k2].to(torch.bfloat16).clone()
            for k2 in src.state_dict() for k in [to_official(k2)] if weight_map[k] == fname}
    part[key] = part[key].to(torch.int8)
    save_file(part, str(root / fname))
    with pytest.raises(CheckpointError, match="dtype") as info:
        load_official(root, config=cfg, device="cpu")
    assert info.value.key == key and info.value.path == str(root / fname)
    # A config.json that is not text.
    write_official_layout(src, root)
    (root / "config.json").write_bytes(b"\x80\x81 not utf-8")
    with pytest.raises(CheckpointError, match="JSON") as info:
        load_official(root, config=cfg, device="cpu")
    assert info.value.path == str(root / "config.json")
    # Nor one nested past Python's recursion limit (a bare RecursionError before).
    (root / "config.json").write_text("{\"a\":" * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(CheckpointError, match="JSON") as info:
        load_official(root, config=cfg, device="cpu")
    assert info.value.path == str(root / "config.json")
    # The unused CLIP patch conv is part of the official layout: without it, strict fails.
    write_official_layout(src, root)
    with pytest.raises(CheckpointError, match="patch_embedding"):
        load_official(root, config=preset("test"), device="cpu")


def test_an_official_directory_missing_a_shard_fails_before_building_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download cut short: the model was built (13 GB in fp32 for the released one) and
    the shards before the missing one loaded before it was named."""
    cfg = with_official_layout(preset("test"))
    weight_map = write_official_layout(build_model(cfg, seed=7), tmp_path / "dso")
    last = sorted(set(weight_map.values()))[-1]
    (tmp_path / "dso" / last).unlink()

    def build(*args: object, **kwargs: object) -> OCRModel:
        raise AssertionError("the model was built before the shards were found")

    monkeypatch.setattr("opticmem.encoder.official.build_model", build)
    with pytest.raises(CheckpointError, match="shard file missing") as info:
        load_official(tmp_path / "dso", config=cfg, device="cpu")
    assert info.value.path == str(tmp_path / "dso" / last)
    assert info.value.key is not None and weight_map[info.value.key] == last


def test_an_official_directory_without_its_tokenizer_fails_before_loading_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """from_official built the model and loaded every shard (minutes for the released
    3B checkpoint) and only then found tokenizer.json missing."""
    cfg = with_official_layout(preset("test"))
    write_official_layout(build_model(cfg, seed=7), tmp_path / "dso")
    (tmp_path / "dso" / "tokenizer.json").unlink()

    def weights(*args: object, **kwargs: object) -> OCRModel:
        raise AssertionError("the weights were loaded before the tokenizer was read")

    monkeypatch.setattr("opticmem.encoder.ocr.load_official", weights)
    with pytest.raises(CheckpointError, match="cannot read tokenizer") as info:
        OCRCodec.from_official(tmp_path / "dso", device="cpu")
    assert info.value.path == str(tmp_path / "dso" / "tokenizer.json")


@pytest.mark.parametrize("dtype", ["bfloat16", torch.int8])
def test_official_loading_with_a_dtype_that_is_not_a_float_type_is_the_callers_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: object
) -> None:
    """It raised torch's own TypeError from deep in building the model (load_checkpoint
    has said InputError all along), after a Hub id had been downloaded."""
    cfg = with_official_layout(preset("test"))
    write_official_layout(build_model(cfg, seed=7), tmp_path / "dso")
    with pytest.raises(InputError, match="dtype must be a floating-point torch"):
        load_official(tmp_path / "dso", config=cfg, device="cpu", dtype=dtype)  # type: ignore[arg-type]
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def download(**kwargs: object) -> str:
        raise AssertionError("downloaded before the dtype was checked")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    with pytest.raises(InputError, match="dtype must be a floating-point torch"):
        OCRCodec.from_official("deepseek-ai/DeepSeek-OCR", device="cpu", dtype=dtype)  # type: ignore[arg-type]


def test_hub_ids_without_network_or_package_give_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        load_official(tmp_path / "not-there", device="cpu")
    with pytest.raises(CheckpointError):
        load_official("a/b/c", device="cpu")


def test_hub_download_failures_become_checkpoint_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls: list[dict[str, object]] = []

    def offline(**kwargs: object) -> str:
        calls.append(kwargs)
        raise OSError("no network here")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="no network here") as info:
        load_official("deepseek-ai/DeepSeek-OCR", device="cpu")
    assert info.value.path == "deepseek-ai/DeepSeek-OCR"
    assert calls and calls[0]["repo_id"] == "deepseek-ai/DeepSeek-OCR"
    assert "*.safetensors" in calls[0]["allow_patterns"]  # type: ignore[operator]


@pytest.mark.parametrize("source", ["./models/dso", "/no/such/dso", "~/no-such-dso",
                                    "models\\dso/v2", "models/dso/v2", "dso"])
def test_a_path_that_is_no_directory_nor_a_repo_id_is_never_sent_to_the_hub(
    monkeypatch: pytest.MonkeyPatch, source: str,
) -> None:
    """A path with a backslash (Windows) and one slash went to the Hub as a repo id; the
    others were refused as "not a checkpoint directory or a Hub repo id", not saying
    that no directory is there."""
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def download(**kwargs: object) -> str:
        raise AssertionError(f"sent to the Hub: {kwargs['repo_id']}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    with pytest.raises(CheckpointError) as info:
        load_official(source, device="cpu")
    assert str(info.value) == f"no checkpoint directory at {source}"


def test_a_relative_path_shaped_like_a_repo_id_says_both_when_the_hub_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """``models/dso`` (a directory the user meant, not there) failed with only the Hub's
    download error, as if the user had asked for a repo."""
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def download(**kwargs: object) -> str:
        raise OSError("404 Repository Not Found")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_official("models/dso", device="cpu")
    message = str(info.value)
    assert message.startswith("no checkpoint directory at models/dso, and as a Hub repo id")
    assert "404 Repository Not Found" in message


@pytest.mark.parametrize("loader", ["ours", "official"])
def test_a_folder_of_pickled_weights_is_refused_saying_why(tmp_path: Path, loader: str) -> None:
    """A folder holding only ``pytorch_model.bin`` was refused for a missing index alone,
    leaving the user to wonder why the weights beside it were not read."""
    root = tmp_path / "ckpt"
    root.mkdir()
    (root / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # never opened
    (root / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"pickle weights \(pytorch_model\.bin\)"
                       r".*never loaded.*safetensors") as info:
        if loader == "ours":
            load_checkpoint(root)
        else:
            load_official(root, config=with_official_layout(preset("test")), device="cpu")
    assert str(info.value.path).endswith(INDEX_FILE)


def test_save_refuses_a_file_for_its_directory_and_a_bad_shard_size(
    model: OCRModel, tmp_path: Path
) -> None:
    # A file where the directory goes raised Python's bare FileExistsError (or
    # NotADirectoryError under one), and max_shard_bytes="16MB" a TypeError from a
    # comparison: neither said which argument was wrong, nor was a CodecError.
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"someone's weights")
    for where in (weights, weights / "ckpt"):
        with pytest.raises(InputError, match="a file is there, not a directory"):
            save_checkpoint(model, where)
    assert weights.read_bytes() == b"someone's weights"
    for size in ("16MB", 0, -1, 1.5, True):
        with pytest.raises(InputError, match="max_shard_bytes must be a whole number"):
            save_checkpoint(model, tmp_path / "out", max_shard_bytes=size)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_an_unknown_or_absent_device_is_an_input_error(tmp_path: Path) -> None:
    """device="gpu" raised torch's bare RuntimeError from inside building the model."""
    codec = OCRCodec.random("test", seed=0)
    save_checkpoint(codec.model, tmp_path / "ckpt")
    bad = ["gpu", "cuda:x", 3.5] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        with pytest.raises(InputError, match="device"):
            OCRCodec.random("test", seed=0, device=device)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="device"):
            load_checkpoint(tmp_path / "ckpt", device=device)  # type: ignore[arg-type]
    assert load_checkpoint(tmp_path / "ckpt", device="cpu") is not None


def test_official_codecs_of_same_named_folders_are_named_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The codec was named after the folder's last component only: two checkpoints in
    folders of one name got one name, which memories key cached readings by."""
    cfg = with_official_layout(preset("test"))
    monkeypatch.setattr("opticmem.encoder.ocr.load_official",
                        lambda source, **kw: load_official(source, config=cfg, **kw))
    names = []
    for seed, parent in ((7, "a"), (8, "b")):
        write_official_layout(build_model(cfg, seed=seed), tmp_path / parent / "dso")
        names.append(OCRCodec.from_official(tmp_path / parent / "dso", device="cpu").name)
    assert names[0] != names[1] and all(n.startswith("deepseek-ocr:dso:") for n in names)
    again = OCRCodec.from_official(tmp_path / "a" / "dso", device="cpu").name
    assert again == names[0]  # the same weights keep their name


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_save_that_fails_part_way_leaves_the_older_checkpoint_whole(
    model: OCRModel, saved: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    """Saving over a checkpoint (``opticmem train --export`` into the last export) deleted
    its shards first: a full disk or a kill part way through left neither the old
    checkpoint nor the new one. The old one is now replaced only once the new one is
    written in full, and what the failed save wrote is gone."""
    import opticmem.encoder.checkpoint as checkpoint_module

    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    other = build_model(preset("test"), seed=9)
    real_save = checkpoint_module.save_file
    written: list[str] = []

    def fail_on_the_third(tensors: dict[str, torch.Tensor], path: str,
                          metadata: dict[str, str] | None = None) -> None:
        written.append(path)
        if len(written) == 3:
            raise failure
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", fail_on_the_third)
    with pytest.raises(type(failure)):
        save_checkpoint(other, saved, max_shard_bytes=128 * 1024)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert same_weights(model, load_checkpoint(saved, device="cpu"))

    monkeypatch.setattr(checkpoint_module, "save_file", real_save)
    save_checkpoint(other, saved, max_shard_bytes=1 << 30)  # one shard replaces several
    assert [p.name for p in saved.glob("*.safetensors")] == ["model-00001-of-00001.safetensors"]
    assert sorted(p.name for p in saved.iterdir() if p.name.startswith(".")) == []
    assert same_weights(other, load_checkpoint(saved, device="cpu"))


def test_a_save_killed_while_moving_its_files_into_place_leaves_the_older_checkpoint(
    model: OCRModel, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The older save's shards that the new one does not overwrite (another shard count
    names them apart) were deleted before the new files were moved into place: a kill or
    power loss between the two left the old index naming shards that were gone, and no
    new index. They are deleted only once the new index is in place."""
    import os

    other = build_model(preset("test"), seed=9)
    real_replace = os.replace

    def killed(src: str | Path, dst: str | Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(other, saved, max_shard_bytes=1 << 30)  # one shard for several
    monkeypatch.setattr(os, "replace", real_replace)
    assert same_weights(model, load_checkpoint(saved, device="cpu"))
    save_checkpoint(other, saved, max_shard_bytes=1 << 30)
    assert [p.name for p in saved.glob("*.safetensors")] == ["model-00001-of-00001.safetensors"]
    assert same_weights(other, load_checkpoint(saved, device="cpu"))


@pytest.mark.parametrize("section, field, value, says", [
    ("sam", "depth", 10**30, r"sam\.depth must be at most 256"),
    ("clip", "depth", 10**6, r"clip\.depth must be at most 256"),
    ("decoder", "layers", 10**6, r"decoder\.layers must be at most 256"),
    ("decoder", "routed_experts", 10**6, r"decoder\.layers × \(decoder\.routed_experts"),
])
def test_a_config_json_of_countless_blocks_is_refused_before_building_the_model(
    saved: Path, section: str, field: str, value: int, says: str
) -> None:
    """Block and expert counts had no bound: the model was built (on the meta device, to
    check the config) one block at a time, which for 10**30 ran until memory was gone."""
    path = saved / "config.json"
    data = json.loads(path.read_text())
    data["model"][section][field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=says) as info:
        load_checkpoint(saved, device="cpu")
    assert info.value.path == str(path)


@pytest.mark.parametrize("section, field, value", [
    ("sam", "width", 2**20),
    ("sam", "neck_channels", 10**6),
    ("sam", "pos_grid", 10**5),
    ("clip", "mlp_dim", 10**9),
    ("decoder", "hidden_size", 2**20),
])
def test_config_sizes_the_shards_do_not_have_are_refused_before_allocating_the_model(
    saved: Path, section: str, field: str, value: int
) -> None:
    """The model was allocated at the config's sizes before any shard's shape was read:
    a damaged config.json (a width of 2**20) failed in torch's allocator, a C++ trace
    naming neither file nor key, or ran the machine out of memory."""
    path = saved / "config.json"
    data = json.loads(path.read_text())
    data["model"][section][field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="does not match the model's") as info:
        load_checkpoint(saved, device="cpu")
    assert info.value.path.startswith(str(saved / "model-")) and info.value.key
    assert "allocate" not in str(info.value)



def _no_file_at(path: Path, damage: str) -> None:
    """Put at ``path`` something that is there but no file: a folder, a broken symbolic
    link (to ``gone`` + the file's suffix beside the checkpoint) or a link to a device."""
    if damage == "folder":
        path.mkdir()
    elif damage == "broken link":
        path.symlink_to(path.parent.parent / f"gone{path.suffix}")
    else:
        path.symlink_to(os.devnull)

@pytest.mark.parametrize("damage, says", [
    ("folder", "tokenizer.json is a folder, not a file"),
    ("broken link", "tokenizer.json is a broken symbolic link to .*gone.json"),
    ("device", r"tokenizer.json is not a regular file \(a device"),
])
def test_a_tokenizer_json_that_is_no_file_is_refused_not_replaced_by_the_default(
    saved: Path, damage: str, says: str
) -> None:
    """A tokenizer.json that was there but no file (a hub cache's link whose blob is gone,
    a folder) was taken for no tokenizer at all: the codec loaded with the default one,
    whose vocabulary the model was not trained on, and read text without a word."""
    tok = saved / "tokenizer.json"
    _no_file_at(tok, damage)
    with pytest.raises(CheckpointError, match=says) as info:
        OCRCodec.from_pretrained(saved, device="cpu")
    assert info.value.path == str(tok)


@pytest.mark.parametrize("damage, says", [
    ("folder", "shard is a folder, not a file"),
    ("broken link", "shard is a broken symbolic link to .*gone.safetensors"),
    ("device", r"shard is not a regular file \(a device"),
])
def test_a_shard_that_is_no_file_says_what_it_is(saved: Path, damage: str, says: str) -> None:
    """A folder, a device or a broken link where a shard should be was reported as a
    missing file, which a look at the folder contradicted."""
    shard = sorted(saved.glob("model-*.safetensors"))[0]
    shard.unlink()
    _no_file_at(shard, damage)
    with pytest.raises(CheckpointError, match=says) as info:
        load_checkpoint(saved, device="cpu")
    assert info.value.path == str(shard) and info.value.key
