"""Shapes, slot layout and internal equivalences of the model modules (fp32, CPU)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from opticmem.encoder.config import DecoderConfig, preset
from opticmem.encoder.decoder import KVCache
from opticmem.encoder.errors import InputError
from opticmem.encoder.half_linear import HalfLinear
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.moe import Dispatch, MoE
from opticmem.encoder.sam import (
    SamAttention,
    embed_patches,
    interpolate_grid,
    rel_pos_table,
    window_partition,
    window_unpartition,
)
from opticmem.render.tiers import Tier

MODES: tuple[Dispatch, ...] = ("grouped", "few", "gather", "dense", "fused", "sets")


@pytest.fixture(scope="module")
def model() -> OCRModel:
    return build_model(preset("test"), seed=0)


@pytest.mark.parametrize("size", [(64, 64), (70, 50), (17, 33), (16, 16)])
def test_patch_embedding_as_one_gemm_equals_the_convolution(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 24, kernel_size=16, stride=16)
    pixels = torch.randn(2, 3, *size)
    expected = conv(pixels).permute(0, 2, 3, 1)  # (B, g, g, C); partial patches dropped
    got = embed_patches(pixels, conv)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_window_partition_round_trip_with_padding() -> None:
    x = torch.randn(2, 17, 17, 5)
    windows, padded = window_partition(x, 7)
    assert padded == (21, 21) and windows.shape == (2 * 9, 7, 7, 5)
    assert torch.equal(window_unpartition(windows, 7, padded, (17, 17)), x)
    # The zero padding sits at the bottom/right of the last windows.
    assert torch.equal(windows[-1, -4:], torch.zeros(4, 7, 5))


def test_rel_pos_table_interpolates_to_the_grid() -> None:
    rel = torch.randn(127, 4)
    assert rel_pos_table(64, 64, rel).shape == (64, 64, 4)
    assert torch.equal(rel_pos_table(64, 64, rel)[0, 0], rel[63])  # offset 0 sits mid-table
    small = rel_pos_table(8, 8, rel)
    assert small.shape == (8, 8, 4)
    # Linear interpolation keeps a constant table constant.
    const = torch.ones(27, 4) * 3
    assert torch.allclose(rel_pos_table(20, 20, const), torch.full((20, 20, 4), 3.0))


def naive_rel_pos_attention(attn: SamAttention, x: torch.Tensor) -> torch.Tensor:
    """Segment-Anything's formulation: explicit logits + decomposed bias, then softmax."""
    B, H, W, C = x.shape
    nh, hd = attn.heads, attn.head_dim
    qkv = attn.qkv(x).reshape(B, H * W, 3, nh, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, B * nh, H * W, hd).unbind(0)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    Rh = rel_pos_table(H, H, attn.rel_pos_h)
    Rw = rel_pos_table(W, W, attn.rel_pos_w)
    r_q = q.reshape(B * nh, H, W, hd)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
    logits = (logits.view(B * nh, H, W, H, W) + rel_h[..., None] + rel_w[..., None, :]).view(
        B * nh, H * W, H * W
    )
    out = (logits.softmax(-1) @ v).view(B, nh, H, W, hd).permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
    return attn.proj(out)


@pytest.mark.parametrize("grid,rel", [(14, 27), (10, 27), (12, 127)])
def test_augmented_rel_pos_attention_equals_explicit_bias(grid: int, rel: int) -> None:
    torch.manual_seed(0)
    attn = SamAttention(32, 2, rel)
    with torch.no_grad():
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
    x = torch.randn(2, grid, grid, 32)
    with torch.no_grad():
        ref = naive_rel_pos_attention(attn, x)
        for impl in ("augment", "augment-narrow", "bias", "auto"):
            attn.impl = impl
            assert torch.allclose(attn(x), ref, atol=1e-5, rtol=1e-4), impl


def test_pos_embed_interpolation_is_identity_at_native_size() -> None:
    pos = torch.randn(1, 16, 16, 8)
    assert interpolate_grid(pos, 16) is pos
    assert interpolate_grid(pos, 8).shape == (1, 8, 8, 8)


@pytest.mark.parametrize("tier", [Tier.TINY, Tier.SMALL])
def test_encoder_shapes_per_tier(model: OCRModel, tier: Tier) -> None:
    g = tier.grid
    with torch.no_grad():
        grid = model.encode_grid(torch.randn(2, 3, tier.pixels, tier.pixels))
        slots = model.grid_to_slots(grid)
    assert grid.shape == (2, g, g, 64)
    assert slots.shape == (2, tier.slots, 64)
    assert torch.isfinite(slots).all()


def test_slot_layout_rows_newlines_separator(model: OCRModel) -> None:
    grid = torch.randn(3, 4, 4, 64)
    slots = model.grid_to_slots(grid)
    assert slots.shape == (3, 4 * 5 + 1, 64)
    rows = slots[:, :-1].view(3, 4, 5, 64)
    assert torch.equal(rows[:, :, :4], grid)
    assert torch.equal(rows[:, :, 4], model.vision.image_newline.expand(3, 4, 64))
    assert torch.equal(slots[:, -1], model.vision.view_separator.expand(3, 64))


def test_encoder_rejects_bad_pixel_shapes(model: OCRModel) -> None:
    with pytest.raises(InputError):
        model.encode_grid(torch.zeros(1, 3, 100, 100))
    with pytest.raises(InputError):
        model.encode_grid(torch.zeros(1, 1, 512, 512))
    with pytest.raises(InputError):
        model.grid_to_slots(torch.zeros(1, 4, 5, 64))


def test_images_are_encoded_independently_of_the_batch(model: OCRModel) -> None:
    x = torch.randn(3, 3, 512, 512)
    with torch.no_grad():
        batch = model.encode_grid(x)
        one = model.encode_grid(x[1:2])
    assert torch.allclose(batch[1:2], one, atol=1e-5)


def random_moe(cfg: DecoderConfig) -> MoE:
    """A seeded MoE in eval mode with weights large enough that every path matters."""
    torch.manual_seed(0)
    moe = MoE(cfg).eval()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return moe


def test_moe_dispatch_paths_agree() -> None:
    cfg = preset("bundled").decoder
    moe = random_moe(cfg)
    for n in (1, 5, 40):
        x = torch.randn(1, n, cfg.hidden_size)
        outs = {}
        with torch.no_grad():
            for mode in MODES:
                moe.dispatch = mode
                outs[mode] = moe(x)
        for mode in MODES:
            assert torch.allclose(outs[mode], outs["grouped"], atol=1e-5), mode


@pytest.mark.parametrize("shared", [1, 0])
def test_moe_adds_into_the_residual_without_writing_it(shared: int) -> None:
    """``moe(x, residual)`` is ``residual + moe(x)`` on every path (the few path adds each
    expert into the output in place: never into the caller's residual)."""
    cfg = replace(preset("bundled").decoder, shared_experts=shared)
    moe = random_moe(cfg)
    for n in (1, 3, 40):
        x = torch.randn(1, n, cfg.hidden_size)
        residual = torch.randn(1, n, cfg.hidden_size)
        before = residual.clone()
        with torch.no_grad():
            for mode in MODES:
                moe.dispatch = mode
                out = moe(x, residual=residual)
                torch.testing.assert_close(out, residual + moe(x), rtol=1e-5, atol=1e-5)
                assert torch.equal(residual, before), mode


def test_moe_cpu_dispatch_by_token_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU where fp16 copies may apply: ``sets`` up to 2 tokens, ``fused`` up to 48;
    without them ``few`` up to 8 (token, expert) pairs, ``dense`` while tokens × experts ≤
    192 (measured faster there), ``grouped`` above; ``grouped`` whenever gradients flow."""
    moe = MoE(preset("bundled").decoder)  # 6 experts, top-2
    with torch.no_grad():
        picks = {n: moe._mode(torch.zeros(n, 1), fp16=False) for n in (1, 4, 5, 32, 33)}
        assert picks == {1: "few", 4: "few", 5: "dense", 32: "dense", 33: "grouped"}
        monkeypatch.setattr(HalfLinear, "enabled", True)
        picks = {n: moe._mode(torch.zeros(n, 1)) for n in (1, 2, 3, 48, 49)}
        assert picks == {1: "sets", 2: "sets", 3: "fused", 48: "fused", 49: "grouped"}
        assert moe._mode(torch.zeros(1, 1, dtype=torch.bfloat16)) == "few"
        official = MoE(preset("test").decoder)
        official.n_experts, official.top_k = 64, 6  # C(64, 6) sets, most experts idle
        assert official._mode(torch.zeros(1, 1)) == "few"
        monkeypatch.setattr(HalfLinear, "enabled", False)
        assert moe._mode(torch.zeros(1, 1)) == "few"
    with torch.enable_grad():
        assert moe._mode(torch.zeros(1, 1)) == "grouped"


def test_moe_trains_the_same_dense_as_grouped() -> None:
    """``train_dispatch = "dense"`` (no host sync on a GPU) gives the grouped path's output,
    aux loss and gradients — router, every expert, shared experts and the input. In fp64,
    but both paths route and sum the experts in fp32, so they agree to fp32's rounding."""
    cfg = preset("bundled").decoder
    moe = random_moe(cfg).double().train()
    x0 = torch.randn(3, 17, cfg.hidden_size, dtype=torch.float64)
    results = {}
    for path in ("grouped", "dense"):
        moe.train_dispatch = path  # type: ignore[assignment]
        moe.zero_grad()
        x = x0.clone().requires_grad_()
        out = moe(x, residual=x)
        assert moe.aux_loss is not None
        (out.square().mean() + moe.aux_loss).backward()
        grads = {n: p.grad for n, p in moe.named_parameters()}
        results[path] = (out.detach(), moe.aux_loss.detach(), x.grad, grads)
    (out_g, aux_g, dx_g, grads_g), (out_d, aux_d, dx_d, grads_d) = results.values()
    torch.testing.assert_close(out_d, out_g, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aux_d, aux_g)
    torch.testing.assert_close(dx_d, dx_g, rtol=1e-5, atol=1e-8)
    assert all(g is not None for g in grads_g.values())  # 17·3 tokens reach every expert
    for name, g in grads_g.items():
        torch.testing.assert_close(grads_d[name], g, rtol=1e-5, atol=1e-8, msg=name)


def test_decoding_path_equals_the_training_path() -> None:
    """The inference fast paths (packed projections, residuals added inside matmuls, experts
    added in place, rotary via addcmul) give the logits of the plain module path that
    gradients take, step by step through a KV cache."""
    model = build_model(preset("bundled"), seed=0).eval()
    cfg = model.cfg.decoder
    torch.manual_seed(0)
    for p in model.decoder.parameters():  # trained-like scales: nothing starts at zero
        torch.nn.init.normal_(p, std=0.05)
    ids = torch.randint(4, cfg.vocab_size, (2, 24))

    def run() -> torch.Tensor:
        cache = KVCache(cfg, 2, 32, torch.device("cpu"), torch.float32)
        emb = model.embed_inputs(ids)
        out = [model.decoder.logits(model.decoder(emb[:, :16], cache=cache))]
        for t in range(16, 24):
            out.append(model.decoder.logits(model.decoder(emb[:, t : t + 1], cache=cache)))
        return torch.cat(out, dim=1)  # (2, 24, V)

    with torch.inference_mode():
        fast = run()
    with torch.enable_grad():
        slow = run().detach()
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4 * slow.abs().max().item())


def test_moe_matches_a_per_token_reference() -> None:
    cfg = preset("test").decoder
    torch.manual_seed(1)
    moe = MoE(cfg).eval()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 3, cfg.hidden_size)
    with torch.no_grad():
        out = moe(x)
        ref = torch.zeros_like(x)
        for b in range(2):
            for t in range(3):
                h = x[b, t]
                scores = F.softmax(moe.router.weight @ h, dim=-1)
                top = torch.topk(scores, cfg.experts_per_token)
                for w, e in zip(top.values, top.indices, strict=True):
                    ref[b, t] += w * moe.experts[int(e)](h)
                assert moe.shared is not None
                ref[b, t] += moe.shared(h)
    assert torch.allclose(out, ref, atol=1e-5)


def test_packed_experts_share_storage_and_follow_updates() -> None:
    cfg = preset("test").decoder
    moe = MoE(cfg).eval()
    gate_up, _ = moe.packed()
    w = moe.experts[2].up_proj.weight
    with torch.no_grad():
        w.add_(1.0)
    assert torch.equal(gate_up[2, cfg.moe_intermediate :], w)
    assert moe.packed()[0] is gate_up
    moe.to(torch.float64)  # replaces storage: the next call re-packs
    gate_up64, _ = moe.packed()
    assert gate_up64.dtype == torch.float64 and gate_up64 is not gate_up


def test_kv_cache_decoding_equals_full_forward(model: OCRModel) -> None:
    cfg = model.cfg.decoder
    torch.manual_seed(0)
    ids = torch.randint(4, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(cfg, 2, 16, torch.device("cpu"), torch.float32)
        emb = model.embed_inputs(ids)
        h = model.decoder(emb[:, :7], cache=cache)
        steps = [model.decoder.logits(h)]
        for t in range(7, 12):
            steps.append(model.decoder.logits(model.decoder(emb[:, t : t + 1], cache=cache)))
    inc = torch.cat(steps, dim=1)
    assert cache.length == 12
    assert torch.allclose(inc, full, atol=1e-4)


def test_image_slots_scatter_into_image_positions(model: OCRModel) -> None:
    cfg = model.cfg.decoder
    slots = torch.randn(1, 5, 64)
    ids = torch.tensor([[cfg.bos_token_id] + [cfg.image_token_id] * 5 + [10, 11]])
    emb = model.embed_inputs(ids, slots)
    assert torch.equal(emb[0, 1:6], slots[0])
    assert torch.equal(emb[0, 6], model.decoder.embed_tokens.weight[10])
    with pytest.raises(InputError, match="vision slots"):
        model.embed_inputs(ids, torch.randn(1, 4, 64))


def test_extra_embeds_are_added_after_the_scatter(model: OCRModel) -> None:
    cfg = model.cfg.decoder
    ids = torch.tensor([[cfg.bos_token_id, cfg.image_token_id, 9]])
    slots = torch.randn(1, 1, 64)
    extra = torch.randn(1, 3, 64)
    base = model.embed_inputs(ids, slots)
    assert torch.allclose(model.embed_inputs(ids, slots, extra), base + extra)
    with torch.no_grad():
        assert not torch.allclose(model(ids, image_slots=slots, extra_embeds=extra),
                                  model(ids, image_slots=slots))
    with pytest.raises(InputError, match="extra_embeds"):
        model.embed_inputs(ids, slots, torch.randn(1, 2, 64))


def test_forward_with_pixels_is_finite_and_trains(model: OCRModel) -> None:
    cfg = model.cfg.decoder
    ids = torch.tensor([[cfg.bos_token_id] + [cfg.image_token_id] * Tier.TINY.slots + [20, 21]])
    m = build_model(preset("test"), seed=3).train()
    logits = m(ids, pixels=torch.randn(1, 3, 512, 512))
    assert logits.shape == (1, ids.shape[1], cfg.vocab_size)
    loss = F.cross_entropy(logits[0, :-1], ids[0, 1:])
    aux = m.decoder.aux_loss()
    assert aux is not None and torch.isfinite(aux)
    (loss + aux).backward()
    grads = [p.grad for p in m.parameters()]
    assert torch.isfinite(loss)
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > len(grads) // 2
