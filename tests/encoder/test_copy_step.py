"""One row's decoding step on the fp16 copies (:class:`CopyStep`): the modules' logits bit
for bit, used by ``generate`` for one row, and only where it applies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from opticmem.encoder import generate as generate_module
from opticmem.encoder.config import preset
from opticmem.encoder.copy_step import CopyStep
from opticmem.encoder.decoder import KVCache, MoEDecoder
from opticmem.encoder.generate import GenerationConfig, Prompt, generate
from opticmem.encoder.half_linear import HalfLinear, fbgemm_available
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.moe import MoE

pytestmark = pytest.mark.skipif(
    not fbgemm_available(), reason="this PyTorch build has no fbgemm fp16 linear (non-x86)"
)


def bf16_valued_model(name: str, seed: int = 0) -> OCRModel:
    """A preset with every weight rounded to a bf16 value, like the bundled codec."""
    model = build_model(preset(name), seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    return model.eval()


@pytest.fixture(scope="module")
def model() -> OCRModel:
    return bf16_valued_model("test")


@pytest.fixture(autouse=True)
def copies_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test sees the class switches as shipped, whatever another test set."""
    monkeypatch.setattr(HalfLinear, "enabled", True)
    for name in ("dispatch", "cpu_set_max_tokens", "cpu_fused_max_tokens",
                 "cpu_max_expert_sets"):
        monkeypatch.setattr(MoE, name, getattr(MoE, name))
    yield


def prefilled(decoder: MoEDecoder, batch: int = 1, prompt: int = 9) -> KVCache:
    cache = KVCache(decoder.cfg, batch, prompt + 40, torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(5)
    decoder(torch.randn(batch, prompt, decoder.cfg.hidden_size, generator=g), None, None, cache)
    return cache


def steps_through_modules(decoder: MoEDecoder, cache: KVCache, xs: list[torch.Tensor]
                          ) -> list[torch.Tensor]:
    return [decoder.logits(decoder(x, None, None, cache)[:, -1]) for x in xs]


@pytest.mark.parametrize("rows", [1, 2, 5])  # MoE on expert sets row by row, or fused
@pytest.mark.parametrize("name", ["test", "bundled"])
def test_steps_give_the_modules_logits_bit_for_bit(name: str, rows: int) -> None:
    """Twenty steps of prefilled rows, through the modules and through the copy step:
    the same logits and the same cache, to the bit (dense first layer, MoE layers with
    shared experts, rotary positions, attention over the growing cache)."""
    model = bf16_valued_model(name, seed=1)
    decoder = model.decoder
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(rows, 1, decoder.cfg.hidden_size, generator=g) for _ in range(20)]
    with torch.inference_mode():
        ref_cache = prefilled(decoder, batch=rows)
        expected = steps_through_modules(decoder, ref_cache, xs)
        cache = prefilled(decoder, batch=rows)
        step = CopyStep.build(decoder, cache)
        assert step is not None
        got = [step(x) for x in xs]
    assert cache.length == ref_cache.length
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    for mine, theirs in zip(cache.keys + cache.values, ref_cache.keys + ref_cache.values,
                            strict=True):
        assert torch.equal(mine[:, :, : cache.length], theirs[:, :, : cache.length])


def test_generate_takes_the_copy_step_for_unpadded_rows_and_reads_the_same_tokens(
    model: OCRModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[CopyStep | None] = []
    real_build = CopyStep.build

    def spy(decoder: MoEDecoder, cache: KVCache) -> CopyStep | None:
        built.append(real_build(decoder, cache))
        return built[-1]

    monkeypatch.setattr(generate_module.CopyStep, "build", spy)
    g = torch.Generator().manual_seed(3)
    prompt = [Prompt(torch.randn(17, model.cfg.embed_dim, generator=g))]
    cfg = GenerationConfig(max_new_tokens=24, stop_token_ids=(-1,))
    fast = generate(model, prompt, cfg)
    assert len(built) == 1 and built[0] is not None
    slow = generate(model, prompt, replace(cfg, copy_step=False))
    assert len(built) == 1  # off: not even tried
    assert fast[0].token_ids == slow[0].token_ids and len(fast[0].token_ids) == 24
    assert fast[0].confidence == slow[0].confidence
    three = [Prompt(torch.randn(17, model.cfg.embed_dim, generator=g)) for _ in range(3)]
    fast = generate(model, prompt + three, cfg)  # four rows of one length: fused experts
    assert len(built) == 2 and built[1] is not None
    slow = generate(model, prompt + three, replace(cfg, copy_step=False))
    assert [r.token_ids for r in fast] == [r.token_ids for r in slow]
    assert [r.confidence for r in fast] == [r.confidence for r in slow]
    short = Prompt(torch.randn(9, model.cfg.embed_dim, generator=g))
    generate(model, [short, *prompt], cfg)  # left padding: the modules, with their mask
    assert len(built) == 2


def test_a_weight_changed_between_calls_is_read_by_the_next_call(model: OCRModel) -> None:
    """The copies are taken when each call starts: an in-place change to the packed
    projection or to one routed expert between calls reaches the next call's steps."""
    g = torch.Generator().manual_seed(11)
    prompt = [Prompt(torch.randn(12, model.cfg.embed_dim, generator=g))]
    cfg = GenerationConfig(max_new_tokens=12, stop_token_ids=(-1,))
    before = generate(model, prompt, cfg)
    moe = model.decoder.layers[1].mlp
    assert isinstance(moe, MoE)
    saved = [p.detach().clone() for p in model.parameters()]
    try:
        with torch.no_grad():
            model.decoder.layers[0].attn.q_proj.weight.mul_(-1.0)
            for expert in moe.expert_list():
                expert.down_proj.weight.mul_(4.0)
        after = generate(model, prompt, cfg)
        modules = generate(model, prompt, replace(cfg, copy_step=False))
    finally:
        with torch.no_grad():
            for p, value in zip(model.parameters(), saved, strict=True):
                p.copy_(value)
    assert after[0].confidence != before[0].confidence
    assert after[0].token_ids == modules[0].token_ids
    assert after[0].confidence == modules[0].confidence


def test_does_not_apply_where_the_modules_must_run(
    model: OCRModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = model.decoder
    with torch.inference_mode():
        assert CopyStep.build(decoder, prefilled(decoder)) is not None
        assert CopyStep.build(decoder, prefilled(decoder, batch=49)) is None  # not fused
        pinned = prefilled(decoder)
        pinned.pin(torch.zeros(1, dtype=torch.long), width=8)
        assert CopyStep.build(decoder, pinned) is None
        handle = decoder.layers[1].register_forward_hook(lambda *_: None)
        assert CopyStep.build(decoder, prefilled(decoder)) is None  # the hook would not run
        handle.remove()
        monkeypatch.setattr(MoE, "dispatch", "few")  # a MoE path chosen by hand
        assert CopyStep.build(decoder, prefilled(decoder)) is None
        monkeypatch.setattr(MoE, "dispatch", "auto")
        monkeypatch.setattr(MoE, "cpu_set_max_tokens", 0)  # no expert sets: all experts
        assert CopyStep.build(decoder, prefilled(decoder)) is not None
        monkeypatch.setattr(MoE, "cpu_fused_max_tokens", 0)  # no copies of experts at all
        assert CopyStep.build(decoder, prefilled(decoder)) is None
        monkeypatch.setattr(MoE, "cpu_set_max_tokens", 2)
        monkeypatch.setattr(HalfLinear, "enabled", False)
        assert CopyStep.build(decoder, prefilled(decoder)) is None
    random = build_model(preset("test"), seed=2).eval()  # fp32 values: no fp16 copies
    with torch.inference_mode():
        assert CopyStep.build(random.decoder, prefilled(random.decoder)) is None
    with torch.no_grad():  # autograd mode on (inference mode off): not a decoding step
        cache = prefilled(decoder)
    assert CopyStep.build(decoder, cache) is None


def test_a_full_cache_is_a_clear_error_and_is_left_as_it_was(model: OCRModel) -> None:
    decoder = model.decoder
    with torch.inference_mode():
        cache = KVCache(decoder.cfg, 1, 4, torch.device("cpu"), torch.float32)
        decoder(torch.randn(1, 4, decoder.cfg.hidden_size), None, None, cache)
        step = CopyStep.build(decoder, cache)
        assert step is not None
        keys = [k.clone() for k in cache.keys]
        with pytest.raises(RuntimeError, match="KV cache full"):
            step(torch.randn(1, 1, decoder.cfg.hidden_size))
    assert cache.length == 4
    assert all(torch.equal(a, b) for a, b in zip(keys, cache.keys, strict=True))
