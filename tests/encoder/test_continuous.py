"""Continuous batching gives every prompt exactly what decoding it alone gives."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from opticmem.encoder import generate_continuous
from opticmem.encoder.config import MIN_POSITIONS, preset
from opticmem.encoder.errors import InputError
from opticmem.encoder.generate import Generated, GenerationConfig, Prompt, generate
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.ocr import OCRCodec
from opticmem.render import Tier

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def make_prompts(model: OCRModel, device: str, count: int) -> list[Prompt]:
    g = torch.Generator().manual_seed(5)
    D = model.cfg.embed_dim
    out = []
    for i in range(count):
        n = (13, 21, 30)[i % 3]  # ragged prompt lengths
        slots = torch.randn(n, D, generator=g) * (0.5 + 0.25 * (i % 4))
        out.append(Prompt(slots.to(device), suffix=[5 + i % 3][: i % 2], prefix=[7][: i % 3 // 2]))
    return out


def alone(model: OCRModel, prompts: list[Prompt], cfg: GenerationConfig) -> list[Generated]:
    return [generate(model, [p], cfg)[0] for p in prompts]


def assert_same(got: list[Generated], want: list[Generated]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.token_ids == b.token_ids and a.finished == b.finished
        assert a.confidence == pytest.approx(b.confidence, rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_each_prompt_decodes_as_it_would_alone(device: str) -> None:
    model = build_model(preset("test"), device=device, seed=0)
    prompts = make_prompts(model, device, 9)
    free = generate(model, prompts[:1], GenerationConfig(max_new_tokens=30, stop_token_ids=(-1,)))
    # Stopping at a token the model emits early makes rows end at different steps.
    stop = (free[0].token_ids[4],)
    configs = [
        GenerationConfig(max_new_tokens=40, stop_token_ids=stop),
        GenerationConfig(max_new_tokens=40, stop_token_ids=stop, stop_check_every=3),
        GenerationConfig(max_new_tokens=25, no_repeat_ngram_size=3, no_repeat_window=12,
                         stop_token_ids=stop, graph_width=16),
        GenerationConfig(max_new_tokens=7, stop_token_ids=(-1,)),  # every row hits the limit
    ]
    for cfg in configs:
        want = alone(model, prompts, cfg)
        assert any(w.finished for w in want) or cfg.max_new_tokens == 7
        for rows, refill_at, prefill_batch in [(3, 1, 256), (4, 2, 1), (9, None, 256),
                                               (20, None, 2)]:
            got = generate_continuous(model, prompts, cfg, rows=rows, refill_at=refill_at,
                                      prefill_batch=prefill_batch)
            assert_same(got, want)


def test_rows_that_restart_are_banned_afresh() -> None:
    """The no-repeat guard forgets a row's previous prompt when it takes a new one."""
    model = build_model(preset("test"), seed=0)
    prompts = make_prompts(model, "cpu", 6)
    free = generate(model, prompts[:1], GenerationConfig(max_new_tokens=30, stop_token_ids=(-1,)))
    cfg = GenerationConfig(max_new_tokens=30, no_repeat_ngram_size=1, no_repeat_window=5,
                           stop_token_ids=(free[0].token_ids[2],))
    assert_same(generate_continuous(model, prompts, cfg, rows=2, refill_at=1),
                alone(model, prompts, cfg))


def test_edge_cases_and_bad_arguments() -> None:
    model = build_model(preset("test"), seed=0)
    prompts = make_prompts(model, "cpu", 3)
    assert generate_continuous(model, [], rows=4) == []
    zero = generate_continuous(model, prompts, GenerationConfig(max_new_tokens=0), rows=2)
    assert zero == [Generated([], False, 1.0)] * 3
    with pytest.raises(InputError):
        generate_continuous(model, prompts, rows=0)
    with pytest.raises(InputError):
        generate_continuous(model, prompts, rows=2, prefill_batch=0)
    with pytest.raises(InputError):
        generate_continuous(model, [Prompt(torch.zeros(4, 3))], rows=1)


@pytest.mark.timeout(120)
def test_a_refill_threshold_above_the_rows_still_refills_them() -> None:
    # refill_at=5 with 2 rows used to wait for 5 free rows that could never be: once both
    # rows ended, the loop ran on forever with the remaining prompts never started.
    model = build_model(preset("test"), seed=0)
    prompts = make_prompts(model, "cpu", 6)
    cfg = GenerationConfig(max_new_tokens=6, stop_token_ids=(-1,))
    assert_same(generate_continuous(model, prompts, cfg, rows=2, refill_at=5),
                alone(model, prompts, cfg))


def test_a_stop_check_interval_past_the_token_limit_is_bounded_by_it() -> None:
    # stop_check_every=10**12 ("never check") used to size the step buffers and the KV
    # cache for 10**12 steps (a failed allocation), and 10**5 ran 10**5 idle steps.
    model = build_model(preset("test"), seed=0)
    prompts = make_prompts(model, "cpu", 5)
    cfg = GenerationConfig(max_new_tokens=8, stop_token_ids=(-1,))
    want = alone(model, prompts, cfg)
    for every in (9, 10**12):
        got = generate_continuous(model, prompts, replace(cfg, stop_check_every=every), rows=2)
        assert_same(got, want)


def test_continuous_codec_reads_what_the_batched_codec_reads() -> None:
    """With the layout aligner fed per row: more pages than rows, two tiers."""
    codec = OCRCodec.random("test", seed=3, batch_size=2)
    assert codec.aligned and codec.model.aligner is not None
    with torch.no_grad():  # its output layer starts at zero (a no-op): make it matter
        codec.model.aligner.mix[1].weight.normal_(std=0.5)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)) for _ in range(5)]
    tokens = codec.encode(images, Tier.TINY) + codec.encode(images[:3], Tier.SMALL)
    batched = codec.decode(tokens, max_new_tokens=20)
    codec.continuous = True
    streamed = codec.decode(tokens, max_new_tokens=20)
    assert [r.text for r in streamed] == [r.text for r in batched]
    assert [r.tier for r in streamed] == [t.tier for t in tokens]
    for a, b in zip(streamed, batched, strict=True):
        assert a.confidence == pytest.approx(b.confidence, rel=1e-5)
        assert a.extra == b.extra


@pytest.mark.gpu
def test_bundled_codec_reads_pages_continuously_on_cuda() -> None:
    """The shipped codec on a GPU decodes continuously by default, and what it reads of
    real pages through two rows in flight is still the page (Large reads at ~97%)."""
    from opticmem.encoder.bundled import load_bundled_codec
    from opticmem.encoder.metrics import char_precision
    from opticmem.evaluation import heldout_pages
    from opticmem.render import render_page

    codec = load_bundled_codec(device="cuda")
    assert codec.continuous and codec.generation.cuda_graphs
    codec.batch_size = 2
    pages, _ = heldout_pages(5, hangul=0)
    recs = codec.read([render_page(p, Tier.LARGE) for p in pages], Tier.LARGE)
    scores = [char_precision(p.transcript, r.text) for p, r in zip(pages, recs, strict=True)]
    assert min(scores) > 0.8, scores


def test_a_huge_token_limit_is_bounded_by_the_decoders_positions() -> None:
    # max_new_tokens=10**12 used to size the KV cache for it: a failed multi-terabyte
    # allocation (or, where memory is overcommitted, the OOM killer).
    cfg = preset("test")
    decoder = replace(cfg.decoder, max_positions=MIN_POSITIONS)  # the fewest a config may give
    model = build_model(replace(cfg, decoder=decoder), seed=0)
    prompts = make_prompts(model, "cpu", 2)
    huge = GenerationConfig(max_new_tokens=10**12, stop_token_ids=(-1,))
    for got in (generate(model, prompts, huge), generate_continuous(model, prompts, huge, rows=1)):
        assert [len(g.token_ids) for g in got] == [MIN_POSITIONS, MIN_POSITIONS]
