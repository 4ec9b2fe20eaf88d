"""CUDA paths: bf16 + SDPA encode/decode agree with fp32 CPU and stay finite."""

from __future__ import annotations

import pytest
import torch

from opticmem.encoder.config import preset
from opticmem.encoder.generate import GenerationConfig, Prompt, generate
from opticmem.encoder.model import build_model
from opticmem.encoder.moe import MoE

pytestmark = pytest.mark.gpu


def test_bf16_cuda_encoder_tracks_fp32_cpu() -> None:
    cpu = build_model(preset("bundled"), seed=0)
    gpu = build_model(preset("bundled"), device="cuda", dtype=torch.bfloat16, seed=0)
    gpu.load_state_dict(cpu.state_dict())
    pixels = torch.randn(4, 3, 640, 640)
    with torch.inference_mode():
        ref = cpu.encode_grid(pixels)
        got = gpu.encode_grid(pixels.cuda().bfloat16()).float().cpu()
    assert torch.isfinite(got).all()
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.05


def test_compiled_encoder_tracks_fp32_cpu_at_base() -> None:
    """``OCRCodec.compile_encoder``'s path, with rel-pos tables that are not zero."""
    cpu = build_model(preset("bundled"), seed=0)
    gpu = build_model(preset("bundled"), device="cuda", dtype=torch.bfloat16, seed=0)
    with torch.no_grad():  # rel-pos tables start at zero: give the bias something to add
        for name, p in cpu.named_parameters():
            if "rel_pos" in name:
                p.normal_(std=0.5)
    gpu.load_state_dict(cpu.state_dict())
    pixels = torch.randn(2, 3, 1024, 1024)
    encode = torch.compile(gpu.encode_grid, dynamic=False)
    with torch.inference_mode():
        ref = cpu.encode_grid(pixels)
        got = encode(pixels.cuda().bfloat16()).float().cpu()
    assert torch.isfinite(got).all()
    assert (got - ref).norm() / ref.norm() < 0.05


def test_cuda_moe_paths_agree() -> None:
    cfg = preset("official").decoder
    moe = MoE(cfg).to("cuda", torch.bfloat16).eval()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.02)
    for n in (1, 4, 64, 300):
        x = torch.randn(1, n, cfg.hidden_size, device="cuda", dtype=torch.bfloat16)
        outs = {}
        with torch.inference_mode():
            for mode in ("grouped", "gather", "dense"):
                moe.dispatch = mode
                outs[mode] = moe(x).float()
        for mode in ("gather", "dense"):
            err = (outs[mode] - outs["grouped"]).abs().max()
            assert err <= 2e-2 * outs["grouped"].abs().max()


def test_cuda_batched_decode_is_deterministic_and_finite() -> None:
    model = build_model(preset("bundled"), device="cuda", dtype=torch.bfloat16, seed=0)
    g = torch.Generator().manual_seed(0)
    prompts = [
        Prompt(slots=torch.randn(n, 384, generator=g).cuda().bfloat16() * 0.02)
        for n in (111, 73, 111)
    ]
    cfg = GenerationConfig(max_new_tokens=32, stop_token_ids=(-1,))
    a = generate(model, prompts, cfg)
    b = generate(model, prompts, cfg)
    assert a == b
    assert all(len(x.token_ids) == 32 and 0.0 < x.confidence <= 1.0 for x in a)
