"""CPU products through fp16 weight copies: used only where fp16 holds the weights, and
decoding with them reads the same tokens as without."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from opticmem.encoder.config import preset
from opticmem.encoder.generate import GenerationConfig, Prompt, generate
from opticmem.encoder.half_linear import HalfLinear, fbgemm_available, holds_exactly
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.moe import Dispatch, MoE

needs_fbgemm = pytest.mark.skipif(
    not fbgemm_available(), reason="this PyTorch build has no fbgemm fp16 linear (non-x86)"
)


def bf16_valued(*shape: int, seed: int = 0) -> torch.Tensor:
    """fp32 values that a bf16 checkpoint could hold, as the bundled weights are."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 0.05).bfloat16().float()


def test_holds_exactly_accepts_bf16_values_and_rejects_the_rest() -> None:
    w = bf16_valued(64, 32)
    assert holds_exactly(w)
    tiny = torch.tensor([3.0e-7, -1.2e-6, 7.0e-5]).bfloat16().float()  # fp16 subnormals
    assert holds_exactly(tiny)
    assert not holds_exactly(torch.randn(64, 32) * 0.05)  # plain fp32 values
    assert not holds_exactly(torch.tensor([1.0e5]))  # beyond fp16's range
    assert not holds_exactly(torch.tensor([float("nan")]))


@needs_fbgemm
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_fp16_product_matches_fp32_linear(rows: int) -> None:
    w, b = bf16_valued(96, 48), bf16_valued(96, seed=1)
    x = torch.randn(2, rows, 48)
    half = HalfLinear()
    got = half.fp16_product(x, w, b)
    assert got is not None and got.shape == (2, rows, 96)
    torch.testing.assert_close(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


@needs_fbgemm
def test_copy_follows_in_place_updates_of_the_weight() -> None:
    w = bf16_valued(32, 16)
    x = torch.randn(1, 16)
    half = HalfLinear()
    torch.testing.assert_close(half(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    w.mul_(-2.0)  # still bf16 values; the copy must be remade
    torch.testing.assert_close(half(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    w.add_(1e-3 * torch.randn(32, 16))  # no longer held exactly: back to fp32
    assert half.fp16_product(x, w) is None
    torch.testing.assert_close(half(x, w), F.linear(x, w))


@needs_fbgemm
def test_fp32_path_where_the_copy_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    w = bf16_valued(32, 16)
    half = HalfLinear()
    assert half.fp16_product(torch.randn(1, 16), w) is not None
    assert half.fp16_product(torch.randn(1, 16).bfloat16(), w.bfloat16()) is None
    assert half.fp16_product(torch.randn(HalfLinear.max_rows + 1, 16), w) is None
    tracked = w.clone().requires_grad_()
    assert half.fp16_product(torch.randn(1, 16), tracked) is None
    with torch.no_grad():
        assert half.fp16_product(torch.randn(1, 16), tracked) is not None
    with torch.inference_mode():
        made_here = bf16_valued(32, 16)
    assert half.fp16_product(torch.randn(1, 16), made_here) is None
    torch.testing.assert_close(half(torch.ones(1, 16), made_here),
                               F.linear(torch.ones(1, 16), made_here))
    monkeypatch.setattr(HalfLinear, "enabled", False)
    assert half.fp16_product(torch.randn(1, 16), w) is None


@needs_fbgemm
def test_copies_of_a_module_do_not_carry_the_fp16_copy() -> None:
    w = bf16_valued(32, 16)
    half = HalfLinear()
    half(torch.randn(1, 16), w)
    for twin in (copy.deepcopy(half), copy.copy(half)):  # copy.copy goes by __getstate__
        assert twin._copy is None
        torch.testing.assert_close(twin(torch.ones(1, 16), w), F.linear(torch.ones(1, 16), w),
                                   rtol=1e-5, atol=1e-5)


def bf16_moe(shared: int) -> MoE:
    """The bundled preset's MoE layer with bf16-valued weights, in eval mode."""
    moe = MoE(replace(preset("bundled").decoder, shared_experts=shared)).eval()
    with torch.no_grad():
        for i, p in enumerate(moe.parameters()):
            p.copy_(bf16_valued(*p.shape, seed=10 + i))
    return moe


@needs_fbgemm
@pytest.mark.parametrize("mode", ["sets", "fused"])
@pytest.mark.parametrize("shared", [1, 0])
@pytest.mark.parametrize("rows", [1, 2, 5, 40])
def test_expert_products_on_copies_equal_the_expert_by_expert_sum(
    mode: Dispatch, shared: int, rows: int
) -> None:
    """Each token's experts (``sets``) or every expert weighted by its routing weight, 0
    when unselected (``fused``), in two fp16 products, give the routed-plus-shared sum of
    running the selected experts one by one, residual included, without writing into the
    caller's residual."""
    moe = bf16_moe(shared)
    x, residual = torch.randn(1, rows, 384), torch.randn(1, rows, 384)
    before = residual.clone()
    flat = x.reshape(rows, -1)
    with torch.no_grad():
        _, weights, ids = moe.route(flat)
        on_copies = moe._sets if mode == "sets" else moe._fused
        assert on_copies(flat, weights, ids, None) is not None  # the fp16 copies apply
        moe.dispatch = mode
        got = moe(x, residual=residual)
        moe.dispatch = "grouped"
        one_by_one = moe(x, residual=residual)
    torch.testing.assert_close(got, one_by_one, rtol=1e-5, atol=1e-5)
    assert torch.equal(residual, before)
    if mode == "sets":  # a copy per set of 2 of the 6 experts, all made with the first
        assert set(moe._set_halves) == set(itertools.combinations(range(6), 2))
        assert all(h._copy is not None for pair in moe._set_halves.values() for h in pair)


@needs_fbgemm
@pytest.mark.parametrize("mode", ["sets", "fused"])
def test_expert_copies_follow_an_in_place_change_of_one_expert(mode: Dispatch) -> None:
    moe = bf16_moe(1)
    x = torch.randn(1, 1, 384)
    with torch.no_grad():
        moe.dispatch = mode
        before = moe(x)
        _, _, ids = moe.route(x[0])
        # A view of the packed weights, with its own version counter: alone, it must
        # remake the copies (it once did not, when the shared expert did not change too).
        moe.experts[int(ids[0, 0])].down_proj.weight.mul_(-2.0)
        after = moe(x)
        moe.dispatch = "grouped"
        expected = moe(x)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
        assert moe.shared is not None
        moe.shared.down_proj.weight.mul_(0.5)
        moe.shared.gate_proj.weight.mul_(0.5)  # packed with up_proj: the same kind of view
        moe.dispatch = mode
        again = moe(x)
        moe.dispatch = "grouped"
        expected = moe(x)
    assert not torch.allclose(after, again)
    torch.testing.assert_close(again, expected, rtol=1e-5, atol=1e-5)


@needs_fbgemm
def test_sets_with_many_possible_sets_make_only_the_ones_used() -> None:
    """With C(16, 4) = 1,820 possible sets, asking for ``sets`` makes copies as tokens use
    them, not all at once (``auto`` would not pick it there at all)."""
    cfg = replace(preset("bundled").decoder, routed_experts=16, experts_per_token=4)
    moe = MoE(cfg).eval()
    with torch.no_grad():
        for i, p in enumerate(moe.parameters()):
            p.copy_(bf16_valued(*p.shape, seed=40 + i))
        x = torch.randn(1, 2, 384)
        assert moe._mode(x[0]) == "fused"
        moe.dispatch = "sets"
        got = moe(x)
        _, _, ids = moe.route(x[0])
        assert set(moe._set_halves) == {tuple(sorted(row)) for row in ids.tolist()}
        moe.dispatch = "grouped"
        torch.testing.assert_close(got, moe(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["sets", "fused"])
def test_expert_copies_fall_back_where_fp16_cannot_hold_the_weights(mode: Dispatch) -> None:
    """fp32-valued weights (the equivalence checks' random ones) take the unfused paths:
    the same numbers as before the copies existed."""
    moe = MoE(preset("bundled").decoder).eval()
    x = torch.randn(1, 3, 384)
    with torch.no_grad():
        _, weights, ids = moe.route(x[0])
        assert (moe._sets if mode == "sets" else moe._fused)(x[0], weights, ids, None) is None
        moe.dispatch = mode
        got = moe(x)
        moe.dispatch = "grouped"
        torch.testing.assert_close(got, moe(x))


@pytest.fixture(scope="module")
def bf16_model() -> OCRModel:
    """The test preset with every weight rounded to a bf16 value, like the bundled codec."""
    model = build_model(preset("test"), seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    return model


@needs_fbgemm
def test_decoding_reads_the_same_tokens_with_and_without_copies(
    bf16_model: OCRModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(3)
    prompts = [Prompt(torch.randn(n, bf16_model.cfg.embed_dim, generator=g)) for n in (21, 13)]
    cfg = GenerationConfig(max_new_tokens=16, stop_token_ids=(-1,))
    for batch in (prompts[:1], prompts):  # one row (the MoE's "few" path) and a batch
        with_copies = generate(bf16_model, batch, cfg)
        attn = bf16_model.decoder.layers[0].attn
        x = torch.randn(1, 1, bf16_model.cfg.decoder.hidden_size)
        with torch.inference_mode():
            assert attn._qkv_half.fp16_product(x, attn._qkv.get()) is not None  # it ran
        monkeypatch.setattr(HalfLinear, "enabled", False)
        without = generate(bf16_model, batch, cfg)
        monkeypatch.setattr(HalfLinear, "enabled", True)
        for a, b in zip(with_copies, without, strict=True):
            assert a.token_ids == b.token_ids
            assert a.confidence == pytest.approx(b.confidence, rel=1e-4)


def test_benchmark_forms_compute_the_same_products() -> None:
    """``benchmarks/cpu_linear_forms.py`` times products that agree with fp32 ``F.linear``
    (to each form's precision), over the bundled decoder's per-token shapes."""
    from benchmarks.cpu_linear_forms import forms, step_shapes

    cfg = preset("bundled").decoder
    shapes = step_shapes()
    assert (3 * cfg.heads * cfg.head_dim, cfg.hidden_size) in shapes
    assert shapes[-1] == (cfg.vocab_size, cfg.hidden_size)
    weights = [bf16_valued(48, 32, seed=1), bf16_valued(16, 48, seed=2)]
    x = [torch.randn(3, 32), torch.randn(3, 48)]
    table = forms(weights)
    assert "fp32 F.linear" in table and "bf16 F.linear" in table
    if fbgemm_available():
        assert "fbgemm fp16" in table
    loose = {"bf16 F.linear": 0.05, "oneDNN packed bf16": 0.05, "fbgemm int8 dynamic": 0.05}
    for name, products in table.items():
        for f, w, xi in zip(products, weights, x, strict=True):
            tol = loose.get(name, 1e-5)
            torch.testing.assert_close(f(xi).float(), F.linear(xi, w), rtol=tol, atol=tol,
                                       msg=name)


def test_decode_paths_benchmark_switches_between_the_cpu_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``benchmarks/cpu_decode_paths.py`` times what it names: each switch makes ``auto``
    pick that MoE path for one token (where fp16 copies may apply), and the last one
    turns the copy step on."""
    from benchmarks.cpu_decode_paths import path_switches
    from opticmem.encoder.ocr import OCRCodec

    monkeypatch.setattr(HalfLinear, "enabled", True)
    for name in ("cpu_set_max_tokens", "cpu_fused_max_tokens"):
        monkeypatch.setattr(MoE, name, getattr(MoE, name))  # restored after the test
    codec = OCRCodec.random("test", device="cpu")
    moe = MoE(preset("bundled").decoder)
    picks = []
    with torch.no_grad():
        for switch in path_switches(codec).values():
            switch()
            picks.append((moe._mode(torch.zeros(1, 384)), codec.generation.copy_step))
    assert picks == [("few", False), ("fused", False), ("sets", False), ("sets", True)]
