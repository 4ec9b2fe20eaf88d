"""Fixed-shape decoding steps (CUDA graphs) against the ordinary eager step.

On CPU :class:`GraphedStep` runs its fixed-shape step without a graph; the ``cuda``
cases record and replay real graphs (skipped where no CUDA device exists).
"""

from __future__ import annotations

import pytest
import torch

from opticmem.encoder.config import preset
from opticmem.encoder.cuda_graph import GraphedStep
from opticmem.encoder.decoder import KVCache
from opticmem.encoder.generate import GenerationConfig, Prompt, generate
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.moe import MoE

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def prompts(model: OCRModel, device: str) -> list[Prompt]:
    g = torch.Generator().manual_seed(0)
    D = model.cfg.embed_dim
    shapes = [(21, 1.0, [5]), (13, 0.5, []), (30, 2.0, [7, 8])]  # ragged: left padding
    return [
        Prompt((torch.randn(n, D, generator=g) * s).to(device), suffix=suffix)
        for n, s, suffix in shapes
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dispatch", ["auto", "gather", "dense"])
def test_fixed_shape_steps_follow_the_eager_steps(device: str, dispatch: str) -> None:
    """Teacher-forced: both steps see the same tokens; logits agree at every step, through
    several attention widths (a new graph each on CUDA)."""
    model = build_model(preset("test"), device=device, seed=0)
    d = model.cfg.decoder
    ps = prompts(model, device)
    rows = [[d.bos_token_id, *[d.image_token_id] * p.slots.shape[0], *p.suffix] for p in ps]
    T0 = max(len(r) for r in rows)
    pads = [T0 - len(r) for r in rows]
    steps, width_step = 40, 16
    with torch.inference_mode():
        ids = torch.tensor([[d.pad_token_id] * n + r for n, r in zip(pads, rows, strict=True)],
                           device=device)
        embeds = model.embed_inputs(ids, torch.cat([p.slots for p in ps]))
        pad_t = torch.tensor(pads, device=device)
        positions = (torch.arange(T0, device=device)[None] - pad_t[:, None]).clamp(min=0)
        key_valid = torch.arange(T0, device=device)[None] >= pad_t[:, None]
        causal = torch.ones(T0, T0, dtype=torch.bool, device=device).tril()
        eye = torch.eye(T0, dtype=torch.bool, device=device)
        mask = ((causal[None] & key_valid[:, None, :]) | eye)[:, None]
        caches = [KVCache(d, 3, T0 + steps, torch.device(device), torch.float32) for _ in "ab"]
        for cache in caches:
            model.decoder(embeds, positions, mask, cache)
        fixed = GraphedStep(model.decoder, caches[1], width_step=width_step)
        fixed.start_rows(range(3), T0, first=pads)
        valid = torch.cat([key_valid, torch.ones(3, steps, dtype=torch.bool, device=device)], 1)
        g = torch.Generator().manual_seed(1)
        next_pos = (T0 - pad_t)[:, None]
        old = MoE.dispatch
        MoE.dispatch = dispatch
        try:
            for _ in range(steps):
                tokens = torch.randint(4, d.vocab_size, (3, 1), generator=g).to(device)
                x = model.decoder.embed_tokens(tokens)
                step_mask = valid[:, None, None, : caches[0].length + 1]
                want = model.decoder.logits(
                    model.decoder(x, next_pos, step_mask, caches[0])[:, -1]
                )
                got = fixed(x).clone()
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
                next_pos = next_pos + 1
        finally:
            MoE.dispatch = old
    assert caches[0].length == T0 + steps
    assert fixed.column.tolist() == [T0 + steps - 1] * 3  # full: rows stay at the last column
    widths = {fixed.width(end) for end in range(T0 + 1, T0 + steps + 1)}
    assert len(widths) > 1
    assert fixed.captures == (len(widths) if device == "cuda" else 0)


@pytest.mark.parametrize("device", DEVICES)
def test_generate_with_cuda_graphs_gives_the_same_tokens(device: str) -> None:
    model = build_model(preset("test"), device=device, seed=0)
    ps = prompts(model, device)
    base = GenerationConfig(max_new_tokens=50, no_repeat_ngram_size=3, no_repeat_window=20)
    eager = generate(model, ps, base)
    for width in (8, 256):
        for batch in (ps, ps[:1]):
            graphed = generate(model, batch, GenerationConfig(
                max_new_tokens=50, no_repeat_ngram_size=3, no_repeat_window=20,
                cuda_graphs=True, graph_width=width,
            ))
            for a, b in zip(eager, graphed, strict=False):
                assert a.token_ids == b.token_ids and a.finished == b.finished
                assert a.confidence == pytest.approx(b.confidence, rel=1e-6)


@pytest.mark.gpu
def test_bf16_cuda_graph_decoding_is_deterministic_and_finite() -> None:
    model = build_model(preset("bundled"), device="cuda", dtype=torch.bfloat16, seed=0)
    g = torch.Generator().manual_seed(0)
    ps = [Prompt(slots=(torch.randn(n, 384, generator=g) * 0.02).cuda().bfloat16())
          for n in (111, 73, 111)]
    cfg = GenerationConfig(max_new_tokens=64, stop_token_ids=(-1,), cuda_graphs=True,
                           graph_width=64)
    a = generate(model, ps, cfg)
    assert a == generate(model, ps, cfg)
    assert all(len(x.token_ids) == 64 and 0.0 < x.confidence <= 1.0 for x in a)


@pytest.mark.gpu
def test_graphed_aligner_feed_reads_the_same_cells() -> None:
    from opticmem.encoder.ocr import AlignerFeed
    from opticmem.encoder.token_cursor import TokenCursor
    from opticmem.render import RenderSettings

    model = build_model(preset("test"), device="cuda", seed=0)
    for p in model.aligner.parameters() if model.aligner is not None else []:
        torch.nn.init.normal_(p, std=0.1)  # the last projection starts at zero
    grid = torch.randn(3, 8, 8, model.cfg.embed_dim, device="cuda")
    table = [bytes([32 + i % 95]) if i % 7 else b"\n" for i in range(model.cfg.decoder.vocab_size)]
    cursor = TokenCursor(table, grid.device)
    feeds = [
        AlignerFeed(model, grid, RenderSettings(), cursor, cuda_graph=g) for g in (False, True)
    ]
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for step in range(12):
            tokens = torch.randint(4, 200, (3,), generator=g).cuda()
            plain, graphed = (f(tokens, step).clone() for f in feeds)
            torch.testing.assert_close(graphed, plain)
        torch.testing.assert_close(feeds[1].state, feeds[0].state)
    assert feeds[0].state[:, 0].max() > 0  # some rows went down a line or more
    assert feeds[1]._read._graph is not None and feeds[0]._read._graph is None
    assert feeds[1]._advance._graph is not None

