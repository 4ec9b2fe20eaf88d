"""The inference engine: greedy decoding with a KV cache, n-gram guard, EOS, hooks."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from opticmem.encoder.config import preset
from opticmem.encoder.decoder import KVCache
from opticmem.encoder.errors import InputError
from opticmem.encoder.generate import Generated, GenerationConfig, Prompt, StepHook, generate
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.ngram import NGramGuard, RepeatBan, banned_tokens


@pytest.fixture(scope="module")
def model() -> OCRModel:
    return build_model(preset("test"), seed=0)


def slots(model: OCRModel, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, model.cfg.embed_dim, generator=g)


def naive_greedy(model: OCRModel, prompt: Prompt, steps: int) -> list[int]:
    """Full-sequence recomputation every step, no cache, no guard: the oracle."""
    d = model.cfg.decoder
    ids = [d.bos_token_id, *prompt.prefix, *[d.image_token_id] * prompt.slots.shape[0],
           *prompt.suffix]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids + out]), image_slots=prompt.slots[None])
            out.append(int(logits[0, -1].argmax()))
    return out


def test_cached_batched_greedy_matches_full_recompute(model: OCRModel) -> None:
    prompts = [
        Prompt(slots(model, 21, 0), suffix=[40, 41]),
        Prompt(slots(model, 13, 1)),  # shorter: left-padded in the batch
        Prompt(slots(model, 21, 2), prefix=[7], suffix=[9, 9, 9]),
    ]
    cfg = GenerationConfig(max_new_tokens=12, no_repeat_ngram_size=0, stop_token_ids=(-1,))
    batch = generate(model, prompts, cfg)
    for p, got in zip(prompts, batch, strict=True):
        assert got.token_ids == naive_greedy(model, p, 12)
        assert not got.finished and len(got.token_ids) == 12


def test_batch_results_equal_single_results(model: OCRModel) -> None:
    prompts = [Prompt(slots(model, 21, s)) for s in range(4)]
    cfg = GenerationConfig(max_new_tokens=10, stop_token_ids=(-1,))
    batch = generate(model, prompts, cfg)
    for p, got in zip(prompts, batch, strict=True):
        [one] = generate(model, [p], cfg)
        assert got.token_ids == one.token_ids
        assert got.confidence == pytest.approx(one.confidence, rel=1e-4)


def test_results_are_deterministic(model: OCRModel) -> None:
    prompts = [Prompt(slots(model, 21, s)) for s in range(2)]
    cfg = GenerationConfig(max_new_tokens=8)
    assert generate(model, prompts, cfg) == generate(model, prompts, cfg)


def test_eos_stops_each_row_and_confidence_is_geometric_mean(model: OCRModel) -> None:
    cfg0 = GenerationConfig(max_new_tokens=6, no_repeat_ngram_size=0, stop_token_ids=(-1,))
    p = Prompt(slots(model, 21, 5))
    [free] = generate(model, [p], cfg0)
    stop_at = free.token_ids[2]
    first = free.token_ids.index(stop_at)
    cfg = GenerationConfig(max_new_tokens=6, no_repeat_ngram_size=0, stop_token_ids=(stop_at,))
    [got] = generate(model, [p], cfg)
    assert got.finished and got.token_ids == free.token_ids[:first]
    # Confidence: geometric mean of p(chosen) over the tokens up to and including the stop.
    d = model.cfg.decoder
    ids = [d.bos_token_id] + [d.image_token_id] * 21
    logps = []
    with torch.no_grad():
        for tok in free.token_ids[: first + 1]:
            logits = model(torch.tensor([ids]), image_slots=p.slots[None])[0, -1]
            logps.append(float(torch.log_softmax(logits, -1)[tok]))
            ids.append(tok)
    expected = float(torch.tensor(logps).mean().exp())
    assert got.confidence == pytest.approx(expected, rel=1e-4)
    assert 0.0 < got.confidence <= 1.0


def test_ngram_guard_matches_reference_definition() -> None:
    rng = random.Random(0)
    for n, window in [(1, 5), (2, 10), (3, 90), (4, 12)]:
        guard = NGramGuard(n, window, whitelist={3})
        seq: list[int] = []
        for _ in range(300):
            assert set(guard.banned()) == banned_tokens(seq, n, window, {3})
            tok = rng.randrange(6)
            seq.append(tok)
            guard.push(tok)


@pytest.mark.parametrize(("n", "window", "whitelist"), [
    (1, 5, ()), (2, 10, (3,)), (3, 90, ()), (4, 12, (0, 3)), (5, 3, ()), (30, 90, (1,)),
])
def test_batched_repeat_ban_matches_reference_definition(
    n: int, window: int, whitelist: tuple[int, ...]
) -> None:
    rng = random.Random(n * 100 + window)
    B, V, L = 5, 7, 200
    # Few distinct tokens (and long runs in one row) so that bans are frequent.
    rows = [[rng.randrange(4 if b else 2) for _ in range(L)] for b in range(B)]
    ban = RepeatBan(n, window, whitelist, B, torch.device("cpu"))
    for length in range(L + 1):
        scores = torch.randn(B, V)
        out = ban(scores)
        for b in range(B):
            banned = banned_tokens(rows[b][:length], n, window, whitelist)
            expect = scores[b].clone()
            expect[sorted(banned)] = float("-inf")
            assert torch.equal(out[b], expect), (length, b, banned)
        if length < L:
            ban.push(torch.tensor([row[length] for row in rows]))


def test_repeat_ban_rows_restart_on_their_own() -> None:
    """A row reset mid-stream is banned as a fresh sequence; the other rows carry on."""
    rng = random.Random(7)
    n, window, B, V = 3, 12, 4, 5
    ban = RepeatBan(n, window, (), B, torch.device("cpu"))
    rows: list[list[int]] = [[] for _ in range(B)]
    for step in range(120):
        if step % 17 == 5:  # restart a different row now and then
            b = step % B
            ban.reset(torch.tensor([b]))
            rows[b] = []
        scores = torch.zeros(B, V)
        out = ban(scores)
        for b in range(B):
            assert set(torch.nonzero(out[b].isinf()).flatten().tolist()) == banned_tokens(
                rows[b], n, window
            ), (step, b)
        tokens = [rng.randrange(3) for _ in range(B)]
        for b, t in enumerate(tokens):
            rows[b].append(t)
        ban.push(torch.tensor(tokens))


def reference_generate(
    model: OCRModel, prompts: list[Prompt], cfg: GenerationConfig,
    step_hook: StepHook | None = None,
) -> list[Generated]:
    """The straightforward loop the engine replaced: per-row :class:`NGramGuard`, tokens
    on the host every step, the key mask grown by concatenation. The oracle for bit-exact
    equality of :func:`generate` on CPU."""
    d = model.cfg.decoder
    B = len(prompts)
    stops = set(cfg.stop_token_ids if cfg.stop_token_ids is not None else (d.eos_token_id,))
    rows = [[d.bos_token_id, *p.prefix, *[d.image_token_id] * p.slots.shape[0], *p.suffix]
            for p in prompts]
    T0 = max(len(r) for r in rows)
    pads = [T0 - len(r) for r in rows]
    with torch.inference_mode():
        ids = torch.tensor([[d.pad_token_id] * pad + r for pad, r in zip(pads, rows, strict=True)])
        embeds = model.embed_inputs(ids, torch.cat([p.slots for p in prompts]))
        pad_t = torch.tensor(pads)
        positions = (torch.arange(T0)[None] - pad_t[:, None]).clamp(min=0)
        key_valid = torch.arange(T0)[None] >= pad_t[:, None]
        mask = None
        if any(pads):
            causal = torch.ones(T0, T0, dtype=torch.bool).tril()
            eye = torch.eye(T0, dtype=torch.bool)
            mask = ((causal[None] & key_valid[:, None, :]) | eye)[:, None]
        cache = KVCache(d, B, T0 + max(cfg.max_new_tokens, 1), torch.device("cpu"), torch.float32)
        logits = model.decoder.logits(model.decoder(embeds, positions, mask, cache)[:, -1])
        next_pos = (T0 - pad_t)[:, None]
        guards = [NGramGuard(max(cfg.no_repeat_ngram_size, 1), cfg.no_repeat_window,
                             cfg.no_repeat_whitelist) for _ in range(B)]
        generated: list[list[int]] = [[] for _ in range(B)]
        logp_sum, counted, finished = [0.0] * B, [0] * B, [False] * B
        done = [False] * B
        for step in range(cfg.max_new_tokens):
            logp = torch.log_softmax(logits.float(), dim=-1)
            scores = logp.clone()
            for b in range(B):
                if not done[b] and cfg.no_repeat_ngram_size:
                    scores[b, guards[b].banned()] = float("-inf")
            chosen = scores.argmax(dim=-1)
            lps = logp.gather(1, chosen[:, None])[:, 0].tolist()
            for b, tok in enumerate(chosen.tolist()):
                if done[b]:
                    continue
                logp_sum[b] += lps[b]
                counted[b] += 1
                if tok in stops:
                    finished[b] = True
                else:
                    generated[b].append(tok)
                    guards[b].push(tok)
            done = list(finished)
            if all(done) or step == cfg.max_new_tokens - 1:
                break
            feed = torch.tensor([d.pad_token_id if f else t
                                 for f, t in zip(finished, chosen.tolist(), strict=True)])
            x = model.decoder.embed_tokens(feed[:, None])
            if step_hook is not None:
                extra = step_hook(generated, step)
                if extra is not None:
                    x = x + extra
            step_mask = None
            if mask is not None:
                key_valid = torch.cat([key_valid, torch.ones(B, 1, dtype=torch.bool)], dim=1)
                step_mask = key_valid[:, None, None, :]
            hidden = model.decoder(x, next_pos, step_mask, cache)
            logits = model.decoder.logits(hidden[:, -1])
            next_pos = next_pos + 1
    return [Generated(generated[b], finished[b],
                      math.exp(logp_sum[b] / counted[b]) if counted[b] else 1.0)
            for b in range(B)]


def test_engine_is_bit_identical_to_the_straightforward_loop(model: OCRModel) -> None:
    prompts = [
        Prompt(slots(model, 21, 20), suffix=[5]),
        Prompt(slots(model, 13, 21) * 0.5),  # left-padded
        Prompt(slots(model, 30, 22) * 2.0, prefix=[7], suffix=[8, 9]),
    ]
    [free] = generate(model, prompts[:1], GenerationConfig(max_new_tokens=40, stop_token_ids=(-1,)))
    configs = [
        GenerationConfig(max_new_tokens=40, no_repeat_ngram_size=0, stop_token_ids=(-1,)),
        GenerationConfig(max_new_tokens=60, no_repeat_ngram_size=3, no_repeat_window=20,
                         stop_token_ids=(-1,)),
        GenerationConfig(max_new_tokens=60, no_repeat_ngram_size=1, no_repeat_window=7,
                         no_repeat_whitelist=frozenset({5, 6, 7})),
        # rows stop at different steps; the stop check runs every step or every 3
        GenerationConfig(max_new_tokens=40, stop_token_ids=(free.token_ids[6],)),
        GenerationConfig(max_new_tokens=40, stop_token_ids=(free.token_ids[6],),
                         stop_check_every=3),
        GenerationConfig(max_new_tokens=1), GenerationConfig(max_new_tokens=0),
    ]
    for cfg in configs:
        assert generate(model, prompts, cfg) == reference_generate(model, prompts, cfg), cfg
    assert any(r.finished for r in generate(model, prompts, configs[3]))

    def hook(generated: list[list[int]], step: int) -> torch.Tensor:
        values = [float(sum(g) % 7) for g in generated]
        return torch.tensor(values)[:, None, None].expand(-1, 1, model.cfg.embed_dim) * 0.1

    cfg = configs[3]
    assert generate(model, prompts, cfg, step_hook=hook) == reference_generate(
        model, prompts, cfg, step_hook=hook
    )


def test_a_no_repeat_window_past_the_token_limit_bans_what_the_limit_would(
    model: OCRModel,
) -> None:
    # A "no limit" window of 10**12 used to size the guard's buffer for it: a failed
    # multi-terabyte allocation, where the bans are those of a window of the token limit.
    from opticmem.encoder import generate_continuous

    prompts = [Prompt(slots(model, 21, s)) for s in range(3)]
    cfg = GenerationConfig(max_new_tokens=40, no_repeat_ngram_size=2, no_repeat_window=40,
                           stop_token_ids=(-1,))
    want = generate(model, prompts, cfg)
    assert want != generate(model, prompts, replace(cfg, no_repeat_ngram_size=0))  # it bans
    for window in (41, 10**4, 10**12):
        wide = replace(cfg, no_repeat_window=window)
        assert generate(model, prompts, wide) == want
        streamed = generate_continuous(model, prompts, wide, rows=2)
        assert [g.token_ids for g in streamed] == [g.token_ids for g in want]


def test_generation_respects_the_ngram_guard(model: OCRModel) -> None:
    p = Prompt(slots(model, 21, 7))
    cfg = GenerationConfig(max_new_tokens=60, no_repeat_ngram_size=3, no_repeat_window=90,
                           stop_token_ids=(-1,))
    [got] = generate(model, [p], cfg)
    toks = got.token_ids
    grams = [tuple(toks[i : i + 3]) for i in range(len(toks) - 2)]
    assert len(grams) == len(set(grams))  # no trigram repeats inside the window


def test_step_hook_sees_tokens_and_changes_the_output(model: OCRModel) -> None:
    p = Prompt(slots(model, 21, 8))
    cfg = GenerationConfig(max_new_tokens=6, no_repeat_ngram_size=0, stop_token_ids=(-1,))
    calls: list[tuple[list[list[int]], int]] = []

    def hook(generated: list[list[int]], step: int) -> torch.Tensor:
        calls.append(([list(g) for g in generated], step))
        return torch.full((1, 1, model.cfg.embed_dim), 3.0)

    [plain] = generate(model, [p], cfg)
    [hooked] = generate(model, [p], cfg, step_hook=hook)
    assert [s for _, s in calls] == [0, 1, 2, 3, 4]
    assert calls[0][0] == [hooked.token_ids[:1]]
    assert calls[3][0] == [hooked.token_ids[:4]]
    assert hooked.token_ids[0] == plain.token_ids[0]  # the first token precedes any hook
    assert hooked.token_ids != plain.token_ids

    def none_hook(generated: list[list[int]], step: int) -> None:
        return None

    [same] = generate(model, [p], cfg, step_hook=none_hook)
    assert same.token_ids == plain.token_ids

    def bad_hook(generated: list[list[int]], step: int) -> torch.Tensor:
        return torch.zeros(1, 2, model.cfg.embed_dim)

    with pytest.raises(InputError, match="step_hook"):
        generate(model, [p], cfg, step_hook=bad_hook)


def test_token_hook_sees_the_fed_tokens_on_the_device_and_matches_a_step_hook(
    model: OCRModel,
) -> None:
    """A token hook gets each step's fed tokens as a tensor (pads once a row stops) and
    steers decoding exactly as a step hook adding the same embeddings does."""
    prompts = [Prompt(slots(model, 21, 8)), Prompt(slots(model, 13, 4))]
    cfg = GenerationConfig(max_new_tokens=7, no_repeat_ngram_size=0)
    D = model.cfg.embed_dim
    table = torch.randn(model.cfg.decoder.vocab_size, D)
    fed: list[torch.Tensor] = []

    def token_hook(tokens: torch.Tensor, step: int) -> torch.Tensor:
        fed.append(tokens.clone())
        return table[tokens][:, None]

    pad = model.cfg.decoder.pad_token_id

    def step_hook(generated: list[list[int]], step: int) -> torch.Tensor:
        last = [g[step] if len(g) > step else pad for g in generated]
        return table[torch.tensor(last)][:, None]

    by_tokens = generate(model, prompts, cfg, token_hook=token_hook)
    by_steps = generate(model, prompts, cfg, step_hook=step_hook)
    assert [g.token_ids for g in by_tokens] == [g.token_ids for g in by_steps]
    for b, g in enumerate(by_tokens):
        assert [int(t[b]) for t in fed][: len(g.token_ids)] == g.token_ids[: len(fed)]
    with pytest.raises(InputError, match="not both"):
        generate(model, prompts, cfg, token_hook=token_hook, step_hook=step_hook)


def test_halted_rows_stop_there_with_certainty(model: OCRModel) -> None:
    """``halt`` ends a row at the step it names: the stop token is its choice, counted
    with probability 1; other rows decode as they would without it, in either engine."""
    from opticmem.encoder import generate_continuous

    prompts = [Prompt(slots(model, 21, s)) for s in range(3)]
    cfg = GenerationConfig(max_new_tokens=9, no_repeat_ngram_size=0, stop_token_ids=(-1,))
    free = generate(model, prompts, cfg)
    [first4] = generate(model, prompts[1:2], replace(cfg, max_new_tokens=4))
    eos = model.cfg.decoder.eos_token_id
    cfg = GenerationConfig(max_new_tokens=9, no_repeat_ngram_size=0, stop_token_ids=(-1, eos))
    steps = [0]

    def halt() -> torch.Tensor:  # row 1 after 4 tokens, row 2 before its first
        steps[0] += 1
        return torch.tensor([False, steps[0] > 4, True])

    def step_hook(generated: list[list[int]], step: int) -> None:
        return None

    runs = [
        lambda: generate(model, prompts, cfg, halt=halt),
        lambda: generate(model, prompts, cfg, halt=halt, step_hook=step_hook),
        lambda: generate_continuous(model, prompts, cfg, rows=3, halt=halt),
    ]
    for run in runs:
        steps[0] = 0
        got = run()
        assert got[0].token_ids == free[0].token_ids[: len(got[0].token_ids)]
        assert got[1].finished and got[1].token_ids == free[1].token_ids[:4]
        # The geometric mean over its 4 tokens and a stop of probability 1.
        assert got[1].confidence == pytest.approx(first4.confidence ** (4 / 5), rel=1e-4)
        assert got[2] == Generated([], True, 1.0)
    # With no stop id in the vocabulary, a halted row still ends (on an id never chosen).
    cfg = replace(cfg, stop_token_ids=(-1,))
    for run in runs:
        steps[0] = 0
        got = run()
        assert got[1].token_ids == free[1].token_ids[:4] and got[2] == Generated([], True, 1.0)


def test_a_halted_row_on_a_stop_id_past_the_vocabulary_keeps_the_guard_working(
    model: OCRModel,
) -> None:
    """A halted row is forced its stop id at every step until the batch ends; an id past
    the vocabulary, repeated 30 times, used to make the no-repeat guard index past the
    scores (a RuntimeError) while the other rows decoded on."""
    from opticmem.encoder import generate_continuous

    V = model.cfg.decoder.vocab_size
    prompts = [Prompt(slots(model, 21, s)) for s in range(2)]
    cfg = GenerationConfig(max_new_tokens=40, stop_token_ids=(V + 10,))  # guard: 30 in 90
    [free] = generate(model, prompts[1:], cfg)
    assert len(free.token_ids) == 40

    def halt() -> torch.Tensor:  # row 0 at once and for good, as a page past its end
        return torch.tensor([True, False])

    for got in (generate(model, prompts, cfg, halt=halt),
                generate_continuous(model, prompts, cfg, rows=2, halt=halt)):
        assert got[0] == Generated([], True, 1.0)
        assert got[1].token_ids == free.token_ids


def test_held_rows_take_their_best_token_that_is_not_a_stop(model: OCRModel) -> None:
    """``hold`` keeps a row off the stop tokens while it names the row: the row takes the
    best other token, counted with the model's own probability, then stops when the model
    says so; other rows decode as without it, and ``halt`` wins over ``hold``. The same in
    either engine."""
    from opticmem.encoder import generate_continuous

    prompts = [Prompt(slots(model, 21, s)) for s in range(3)]
    free = generate(model, prompts, GenerationConfig(max_new_tokens=9, no_repeat_ngram_size=0,
                                                     stop_token_ids=(-1,)))
    first = free[1].token_ids[0]
    cfg = GenerationConfig(max_new_tokens=9, no_repeat_ngram_size=0, stop_token_ids=(first,))
    unheld = generate(model, prompts, cfg)
    assert unheld[1].token_ids == [] and unheld[1].finished  # its first choice is the stop
    d = model.cfg.decoder
    ids = [d.bos_token_id, *[d.image_token_id] * 21]
    with torch.no_grad():
        logp = torch.log_softmax(
            model(torch.tensor([ids]), image_slots=prompts[1].slots[None])[0, -1].float(), -1
        )
    runner_up = int(logp.topk(2).indices[1])
    steps = [0]

    def hold() -> torch.Tensor:  # row 1 for its first 3 choices; row 2 always, but halted
        steps[0] += 1
        return torch.tensor([False, steps[0] <= 3, True])

    def halt() -> torch.Tensor:
        return torch.tensor([False, False, True])

    def step_hook(generated: list[list[int]], step: int) -> None:
        return None

    runs = [
        lambda: generate(model, prompts, cfg, hold=hold, halt=halt),
        lambda: generate(model, prompts, cfg, hold=hold, halt=halt, step_hook=step_hook),
        lambda: generate_continuous(model, prompts, cfg, rows=3, hold=hold, halt=halt),
    ]
    results = []
    for run in runs:
        steps[0] = 0
        got = run()
        results.append(got)
        assert got[0].token_ids == unheld[0].token_ids
        assert got[0].confidence == pytest.approx(unheld[0].confidence, rel=1e-5)
        assert got[1].token_ids[0] == runner_up and first not in got[1].token_ids[:3]
        assert len(got[1].token_ids) >= 3
        assert got[2] == Generated([], True, 1.0)
    assert len({tuple((tuple(g.token_ids), g.finished) for g in r) for r in results}) == 1
    # Its confidence counts the model's probability of the runner-up, not a renormalised one.
    [alone] = generate(model, prompts[1:2], replace(cfg, max_new_tokens=1),
                       hold=lambda: torch.tensor([True]))
    assert alone.token_ids == [runner_up]
    assert math.log(alone.confidence) == pytest.approx(float(logp[runner_up]), abs=1e-5)


def test_prompt_extra_embeds_reach_the_prefill(model: OCRModel) -> None:
    p = Prompt(slots(model, 21, 9))
    cfg = GenerationConfig(max_new_tokens=3, no_repeat_ngram_size=0)
    [plain] = generate(model, [p], cfg)
    extra = torch.zeros(1, 22, model.cfg.embed_dim)
    extra[0, -1] = 5.0
    [shifted] = generate(model, [p], cfg, prompt_extra=extra)
    assert shifted.token_ids != plain.token_ids or shifted.confidence != plain.confidence


def test_zero_new_tokens_and_bad_settings(model: OCRModel) -> None:
    [got] = generate(model, [Prompt(slots(model, 5, 0))], GenerationConfig(max_new_tokens=0))
    assert got.token_ids == [] and got.confidence == 1.0
    with pytest.raises(InputError):
        GenerationConfig(max_new_tokens=-1)
    with pytest.raises(InputError):
        generate(model, [Prompt(torch.zeros(5, 3))])
    assert generate(model, []) == []


@pytest.mark.parametrize("part", ["prefix", "suffix"])
@pytest.mark.parametrize("ids", [[4096], [-1], ["a"], [1.5], [True], "ab"])
def test_prompt_ids_outside_the_vocabulary_raise_input_errors(
    model: OCRModel, part: str, ids: list[object]
) -> None:
    # They used to reach the embedding: a bare IndexError, TypeError or RuntimeError.
    from opticmem.encoder import generate_continuous

    assert model.cfg.decoder.vocab_size == 4096
    prompt = Prompt(slots(model, 5, 0), **{part: ids})  # type: ignore[arg-type]
    cfg = GenerationConfig(max_new_tokens=2)
    with pytest.raises(InputError, match=f"prompt {part}"):
        generate(model, [prompt], cfg)
    with pytest.raises(InputError, match=f"prompt {part}"):
        generate_continuous(model, [prompt], cfg, rows=1)


def test_prompt_ids_of_any_integer_type_are_read_as_ids(model: OCRModel) -> None:
    s = slots(model, 5, 0)
    cfg = GenerationConfig(max_new_tokens=4)
    [plain] = generate(model, [Prompt(s, prefix=[7], suffix=[40, 41])], cfg)
    [typed] = generate(model, [Prompt(s, prefix=torch.tensor([7]).tolist(),
                                      suffix=list(torch.tensor([40, 41])))], cfg)
    assert typed == plain


@pytest.mark.parametrize(
    "bad",
    [
        {"max_new_tokens": 3.5}, {"max_new_tokens": "10"}, {"max_new_tokens": None},
        {"max_new_tokens": True}, {"no_repeat_ngram_size": 2.5}, {"graph_width": "8"},
        {"stop_token_ids": ()}, {"stop_token_ids": 1}, {"stop_token_ids": (1.0,)},
        {"no_repeat_whitelist": "ab"}, {"no_repeat_whitelist": 5},
        # Switches: "false" is truthy (it turned CUDA graphs on), None falsy.
        {"cuda_graphs": "false"}, {"cuda_graphs": 1}, {"copy_step": None}, {"copy_step": "no"},
    ],
)
def test_generation_settings_of_the_wrong_type_raise_input_errors(bad: dict[str, object]) -> None:
    # These used to be accepted and fail later: a bare TypeError or IndexError mid-decode.
    with pytest.raises(InputError):
        GenerationConfig(**bad)  # type: ignore[arg-type]


def test_generation_switches_take_numpy_booleans() -> None:
    cfg = GenerationConfig(cuda_graphs=np.bool_(False), copy_step=np.bool_(True))
    assert cfg.cuda_graphs is False and cfg.copy_step is True


def test_generation_settings_take_any_collection_of_ids(model: OCRModel) -> None:
    cfg = GenerationConfig(max_new_tokens=3, stop_token_ids=[1], no_repeat_whitelist=[5, 6])
    assert cfg.stop_token_ids == (1,) and cfg.no_repeat_whitelist == frozenset({5, 6})
    assert hash(cfg) == hash(replace(cfg))
    [got] = generate(model, [Prompt(slots(model, 5, 0))], cfg)
    assert len(got.token_ids) <= 3
