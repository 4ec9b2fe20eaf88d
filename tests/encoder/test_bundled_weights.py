"""The shipped codec: it loads offline, reads a held-out page, and fails clearly when broken."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from opticmem.codecs import CodecSlot
from opticmem.encoder.bundled import BundledWeightsError, load_bundled_codec, weights_dir
from opticmem.encoder.codec import CodecError, checkpoint_codec_name
from opticmem.encoder.metrics import char_precision
from opticmem.evaluation import heldout_pages
from opticmem.render import PageLayout, render_page

pytestmark = pytest.mark.skipif(
    not (weights_dir() / "model.safetensors.index.json").is_file(),
    reason="no bundled weights in this checkout",
)


@pytest.fixture()
def weights_copy(tmp_path: Path) -> Path:
    out = tmp_path / "weights"
    shutil.copytree(weights_dir(), out)
    for f in out.iterdir():
        f.chmod(0o644)
    return out


def held_out_large_page() -> tuple[PageLayout, Image.Image]:
    [page], _ = heldout_pages(1, seed=4242, hangul=0)
    return page, render_page(page, "large").convert("RGB")


def test_bundled_codec_reads_a_held_out_large_page() -> None:
    codec = load_bundled_codec(device="cpu")
    assert codec.aligned and not codec.generation.cuda_graphs  # graphs only on CUDA
    # what a bot that has not loaded it names it to the workers (CodecSlot.expected_name)
    assert codec.name == checkpoint_codec_name(weights_dir()) == CodecSlot().expected_name()
    page, image = held_out_large_page()
    text = codec.decode(codec.encode([image], "large"))[0].text
    # This page reads at 0.917 (held-out Large pages average 0.98,
    # benchmarks/results/codec_eval); a model that stopped reading would fall to ~0.3, the
    # language prior's floor.
    assert char_precision(page.transcript, text) > 0.85


def test_missing_weight_file_is_named(weights_copy: Path) -> None:
    (weights_copy / "model.safetensors.index.json").unlink()
    with pytest.raises(BundledWeightsError, match=re.escape("model.safetensors.index.json")):
        load_bundled_codec(weights_copy, device="cpu")


def test_missing_shard_is_named(weights_copy: Path) -> None:
    shard = sorted(weights_copy.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(BundledWeightsError, match=re.escape(shard.name)):
        load_bundled_codec(weights_copy, device="cpu")


def test_corrupt_shard_is_named(weights_copy: Path) -> None:
    shard = sorted(weights_copy.glob("model-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    shard.write_bytes(bytes(data))
    with pytest.raises(BundledWeightsError, match=re.escape(shard.name)):
        load_bundled_codec(weights_copy, device="cpu")


def test_weight_errors_are_codec_errors(weights_copy: Path) -> None:
    # errors.py promises that `except CodecError` catches anything the codec or its weights
    # raise; BundledWeightsError was a FileNotFoundError only.
    (weights_copy / "config.json").write_text("{not json")
    with pytest.raises(CodecError, match=re.escape("config.json")):
        load_bundled_codec(weights_copy, device="cpu")
    (weights_copy / "config.json").unlink()
    with pytest.raises(CodecError, match=re.escape("config.json")) as info:
        load_bundled_codec(weights_copy, device="cpu")
    assert isinstance(info.value, FileNotFoundError)  # still caught as an OSError


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bundled_codec_decodes_with_cuda_graphs_on_cuda() -> None:
    codec = load_bundled_codec(device="cuda")
    assert codec.generation.cuda_graphs
    page, image = held_out_large_page()
    text = codec.decode(codec.encode([image], "large"))[0].text
    assert char_precision(page.transcript, text) > 0.85


def test_a_file_given_for_the_folder_is_named_as_such(weights_copy: Path) -> None:
    # It was "codec file missing: …/config.json/config.json".
    with pytest.raises(BundledWeightsError, match="is a file, not a directory"):
        load_bundled_codec(weights_copy / "config.json", device="cpu")


def test_a_folder_of_pickled_weights_says_they_are_never_loaded(tmp_path: Path) -> None:
    # `opticmem eval --codec DIR` on a PyTorch folder said only that its index was missing.
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(BundledWeightsError, match=r"pickle weights \(pytorch_model\.bin\)"):
        load_bundled_codec(tmp_path, device="cpu")
