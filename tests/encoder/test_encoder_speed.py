"""Analytic FLOP counts and the benchmark script's CPU smoke run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from opticmem.encoder.config import preset
from opticmem.encoder.flops import decoder_flops_per_token, encoder_flops
from opticmem.encoder.model import build_model
from opticmem.encoder.sam import SamAttention

ROOT = Path(__file__).resolve().parents[2]


def attention_flops(cfg_name: str, pixels: int) -> int:
    """QKᵀ + AV FLOPs of every SDPA call (FlopCounterMode does not count CPU SDPA)."""
    cfg = preset(cfg_name)
    P = pixels // 16
    total = 0
    for i in range(cfg.sam.depth):
        if i in cfg.sam.global_attn_indexes:
            total += 4 * (P * P) ** 2 * cfg.sam.width
        else:
            w = cfg.sam.window_size
            windows = math.ceil(P / w) ** 2
            total += windows * 4 * (w * w) ** 2 * cfg.sam.width
    T = (pixels // 64) ** 2 + 1
    return total + cfg.clip.depth * 4 * T * T * cfg.clip.width


def test_encoder_flops_match_a_counted_forward() -> None:
    model = build_model(preset("test"), seed=0)
    before = SamAttention.impl
    SamAttention.impl = "bias"  # the reference form: rel-pos einsums show up as bmm
    try:
        for pixels in (512, 640):
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model.encode_grid(torch.randn(1, 3, pixels, pixels))
            counted = counter.get_total_flops() + attention_flops("test", pixels)
            assert abs(counted - encoder_flops(model.cfg, pixels)) / counted < 0.01
    finally:
        SamAttention.impl = before


def test_official_flops_are_plausible() -> None:
    cfg = preset("official")
    base = encoder_flops(cfg, 1024)
    assert 1.0e12 < base < 1.3e12  # ~1.14 TFLOP per Base page
    assert encoder_flops(cfg, 1280) > base > encoder_flops(cfg, 640) > encoder_flops(cfg, 512)
    # ~570M active params → ~1.15 GFLOP per token plus attention.
    per_token = decoder_flops_per_token(cfg, 1)
    assert 1.0e9 < per_token < 1.3e9


def load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "encoder_speed", ROOT / "benchmarks" / "encoder_speed.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_benchmark_smoke_run_writes_a_table(tmp_path: Path) -> None:
    bench = load_benchmark()
    out = tmp_path / "speed.md"
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| encode | tiny | 1 |" in text and "| encode | small | 2 |" in text
    assert "| decode | tiny | 2 |" in text and "pages/s" in text and "tokens/s" in text


def test_decode_profile_smoke_run_writes_a_table(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "decode_profile", ROOT / "benchmarks" / "decode_profile.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path / "profile.md"
    argv = ["--device", "cpu", "--preset", "test", "--tier", "tiny", "--batches", "1,2",
            "--steps", "3", "--repeats", "1", "--modes", "eager,graphs", "--graph-width", "8",
            "--aligner", "--cprofile", "--out", str(out)]
    assert module.main(argv) == 0
    text = out.read_text()
    assert "| eager | 1 |" in text and "| graphs | 2 |" in text
    assert "top ops per step by calls" in text and "cProfile" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_sam_attention_benchmark_refuses_without_a_gpu(tmp_path: Path) -> None:
    from benchmarks.sam_attention_speed import main

    assert main(["--out", str(tmp_path / "sam.md")]) == 2
    assert not (tmp_path / "sam.md").exists()


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_sam_attention_benchmark_forms_compute_the_same_attention() -> None:
    """The candidate forms it times (flex among them) all compute SAM's rel-pos attention."""
    from benchmarks.sam_attention_speed import _inputs, _variant, flex_rel_pos_attention

    inputs = tuple(x.float() for x in _inputs(2, 6, torch.device("cpu")))
    ref = _variant("bias", inputs)()
    torch.testing.assert_close(_variant("augment-vpad", inputs)(), ref, atol=1e-5, rtol=1e-4)
    # Eager here (the benchmark compiles it on the GPU): the same scores, unfused.
    torch.testing.assert_close(flex_rel_pos_attention(*inputs), ref, atol=1e-5, rtol=1e-4)


def test_sam_attention_benchmark_rejects_unknown_forms() -> None:
    from benchmarks.sam_attention_speed import main

    with pytest.raises(SystemExit):
        main(["--forms", "bias,nope"])


def test_encoder_profile_smoke_run_writes_a_table(tmp_path: Path) -> None:
    from benchmarks.encoder_profile import main

    out = tmp_path / "profile.md"
    assert main(["--smoke", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| default |" in text and "| global-bias |" in text and "backend eager" in text
    assert SamAttention.impl == "auto"  # the global-bias variant's class-wide form is undone


def test_encoder_profile_variants_parse_and_kernels_group() -> None:
    from benchmarks.encoder_profile import kernel_group, parse_variant

    assert parse_variant("default") == ({}, "auto")
    assert parse_variant("coordinate-descent+freezing+global-bias") == (
        {"coordinate_descent_tuning": True, "freezing": True}, "bias")
    with pytest.raises(SystemExit, match="unknown variant part 'fast'"):
        parse_variant("default+fast")
    assert kernel_group("nvjet_sm90_tst_192x192_64x4_1x2_h_bz_coopB_bias_TNN") == "GEMM"
    assert kernel_group("cudnn_generated_fort_native_sdpa_sm90_flash_fprop") == "attention"
    assert kernel_group("triton_poi_fused_gelu_view_7") == "fused Triton"
    assert kernel_group("void implicit_convolve_sgemm<__nv_bfloat16>") == "conv"
    assert kernel_group("nchwToNhwcKernel") == "other"
