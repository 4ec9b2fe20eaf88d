"""Batched greedy decoding with a KV cache: the inference engine behind the codec.

Each sequence is ``[bos] + prefix ids + <image>·slots + suffix ids`` (the reference's
"plain" template, no EOS); sequences of different lengths are left-padded and masked, so
pages of any tiers and prompts decode in one batch. Per step, every row picks the
highest-scoring token after the no-repeat n-gram guard, stops at EOS, and reports a
confidence: the geometric mean of the probabilities the model gave its chosen tokens (the
EOS included, before any ban).

A ``step_hook(generated, step) -> Tensor (B, 1, D) | None`` may add embeddings to the
next input position: it is called after token ``step`` (0-based) has been chosen for every
row, with ``generated[b]`` the tokens of row ``b`` so far (finished rows keep their
tokens, EOS excluded), and its result is added to the embedding of that token as it is
fed back. A ``token_hook(tokens, step)`` does the same from the tensor of tokens being fed
back (B,) — the pad id for rows that have stopped — without bringing them to the host.
``prompt_extra`` (B, T, D) does the same for the prompt positions. A ``halt() -> Tensor
(B,) bool``, asked before every choice, names rows that must stop there: their choice is
the first stop token, with probability 1 (the layout aligner's cursor past the page's last
row, :meth:`~opticmem.encoder.ocr.AlignerFeed.past_page`). A ``hold`` of the same form
names rows that may not stop there: they take their best token that is not a stop token
(the aligner's cursor above the page's last row of ink,
:meth:`~opticmem.encoder.ocr.AlignerFeed.above_ink`); ``halt`` wins over ``hold``.

A step runs on the device without waiting for it: choices, their log-probabilities and
the no-repeat bans (:class:`~opticmem.encoder.ngram.RepeatBan`) stay tensors, and the host
reads them at the end. Only the check whether every row has stopped waits for the device
(every ``stop_check_every`` steps), and a ``step_hook`` needs the tokens every step.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import torch
from torch import Tensor

from opticmem.encoder.copy_step import CopyStep
from opticmem.encoder.cuda_graph import GraphedStep
from opticmem.encoder.decoder import KVCache
from opticmem.encoder.errors import InputError
from opticmem.encoder.model import OCRModel
from opticmem.encoder.ngram import RepeatBan

StepHook = Callable[[list[list[int]], int], Tensor | None]
"""``(generated_ids, step) -> extra embeddings (B, 1, D) for the next input, or None``."""
TokenHook = Callable[[Tensor, int], Tensor | None]
"""``(fed tokens (B,) on the device, step) -> extra embeddings (B, 1, D), or None``."""
Halt = Callable[[], Tensor]
"""``() -> (B,) bool on the device``: rows whose next choice must be the stop token."""
Hold = Callable[[], Tensor]
"""``() -> (B,) bool on the device``: rows whose next choice may not be a stop token."""


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy decoding settings; the defaults follow the reference (n-gram 30 / window 90)."""

    max_new_tokens: int = 2048
    """At most the decoder's ``max_positions`` are used: the KV cache is allocated for them
    up front, so a "no limit" value such as ``10**9`` would otherwise ask for terabytes."""
    no_repeat_ngram_size: int = 30
    """0 turns the guard off."""
    no_repeat_window: int = 90
    """Generated tokens the guard looks back over; a window longer than a row's token limit
    bans what that limit would (a row has no more tokens to look back over)."""
    no_repeat_whitelist: frozenset[int] = field(default_factory=frozenset)
    stop_token_ids: tuple[int, ...] | None = None
    """Defaults to the model's EOS id."""
    stop_check_every: int = 0
    """Steps between checks whether every row has stopped (each check waits for the
    device). 0: every step on CPU or with a ``step_hook`` (which syncs anyway), every 8 on
    CUDA. Rows that stopped still run until the check; results do not depend on it."""
    cuda_graphs: bool = False
    """Run each decoding step as a recorded CUDA graph (:mod:`opticmem.encoder.cuda_graph`):
    one replay instead of every layer's kernel launches. Attention then reads the cache in
    widths of ``graph_width`` columns under a mask, and each new width costs one capture.
    On CPU the same fixed-shape step runs without a graph. Off by default."""
    graph_width: int = 256
    """With ``cuda_graphs``: attention width granularity (columns)."""
    copy_step: bool = True
    """On CPU, rows without left padding run each step on the weights' fp16 copies
    directly (:class:`~opticmem.encoder.copy_step.CopyStep`, where it applies) instead of
    through the modules. The logits are the same bit for bit; off is for comparing."""

    def __post_init__(self) -> None:
        # Types first: a float or a string here used to fail deep inside decoding with a
        # bare TypeError, and a list of stop ids made the config unhashable.
        for name in ("max_new_tokens", "no_repeat_ngram_size", "no_repeat_window",
                     "stop_check_every", "graph_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise InputError(f"{name} must be an int, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("cuda_graphs", "copy_step"):
            # Switches: "false" or "no" (a config file's or a CLI's text) is truthy and
            # turned CUDA graphs on; None turned the copy step off. NumPy's bool is taken.
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {value!r}")
            object.__setattr__(self, name, bool(value))
        object.__setattr__(self, "no_repeat_whitelist",
                           frozenset(_token_ids("no_repeat_whitelist", self.no_repeat_whitelist)))
        if self.stop_token_ids is not None:
            stops = _token_ids("stop_token_ids", self.stop_token_ids)
            if not stops:
                # A row held off its stop tokens, or halted, needs one to choose.
                raise InputError("stop_token_ids must name at least one id (None: the EOS)")
            object.__setattr__(self, "stop_token_ids", stops)
        if self.max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be ≥ 0, got {self.max_new_tokens}")
        if self.no_repeat_ngram_size < 0 or self.no_repeat_window < 1:
            raise InputError("no_repeat_ngram_size must be ≥ 0 and no_repeat_window ≥ 1")
        if self.stop_check_every < 0:
            raise InputError(f"stop_check_every must be ≥ 0, got {self.stop_check_every}")
        if self.graph_width < 1:
            raise InputError(f"graph_width must be ≥ 1, got {self.graph_width}")


def _token_ids(name: str, value: object) -> tuple[int, ...]:
    """``value`` as a tuple of token ids; :class:`InputError` unless it is a collection of
    ints (a string or a single int is a mistake, not a collection of ids)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, set, frozenset)):
        raise InputError(f"{name} must be a collection of token ids, got {value!r}")
    if any(isinstance(i, bool) or not isinstance(i, Integral) for i in value):
        raise InputError(f"{name} must hold ints, got {value!r}")
    return tuple(int(i) for i in value)


@dataclass(frozen=True)
class Generated:
    """One row's result: tokens without EOS, whether EOS was reached, and confidence."""

    token_ids: list[int]
    finished: bool
    confidence: float


@dataclass
class Prompt:
    """One sequence to decode: vision slots (S, D) between optional prefix/suffix ids."""

    slots: Tensor
    suffix: Sequence[int] = ()
    prefix: Sequence[int] = ()


@torch.inference_mode()
def generate(
    model: OCRModel,
    prompts: Sequence[Prompt],
    config: GenerationConfig | None = None,
    *,
    step_hook: StepHook | None = None,
    token_hook: TokenHook | None = None,
    prompt_extra: Tensor | None = None,
    halt: Halt | None = None,
    hold: Hold | None = None,
) -> list[Generated]:
    """Decode every prompt greedily in one batch; results in input order."""
    if step_hook is not None and token_hook is not None:
        raise InputError("give a step_hook or a token_hook, not both")
    cfg = config or GenerationConfig()
    dcfg = model.cfg.decoder
    B = len(prompts)
    if B == 0:
        return []
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    D = dcfg.hidden_size
    stops = stop_tokens(model, cfg)

    # ---- prompt ids, left-padded: [pad…] + [bos] + prefix + <image>·S + suffix
    rows = prompt_ids(model, prompts)
    T0 = max(len(r) for r in rows)
    pads = [T0 - len(r) for r in rows]
    ids = torch.tensor(
        [[dcfg.pad_token_id] * pad + r for pad, r in zip(pads, rows, strict=True)], device=device
    )  # (B, T0)
    slots = torch.cat([p.slots.to(device=device, dtype=dtype) for p in prompts])  # (ΣS, D)
    embeds = model.embed_inputs(ids, slots, prompt_extra)  # (B, T0, D)

    padded = any(pads)
    pad_t = torch.tensor(pads, device=device)
    positions = (torch.arange(T0, device=device)[None] - pad_t[:, None]).clamp(min=0)  # (B, T0)
    key_valid = torch.arange(T0, device=device)[None] >= pad_t[:, None]  # (B, T0)
    mask = None
    if padded:
        causal = torch.ones(T0, T0, dtype=torch.bool, device=device).tril()
        # Pad queries see themselves only, so no row of the mask is empty (no NaNs).
        mask = (causal[None] & key_valid[:, None, :]) | torch.eye(
            T0, dtype=torch.bool, device=device
        )[None]
        mask = mask[:, None]  # (B, 1, T0, T0)

    steps = new_token_limit(model, cfg)
    capacity = T0 + max(steps, 1)
    cache = KVCache(dcfg, B, capacity, device, dtype)
    hidden = model.decoder(embeds, positions, mask, cache)  # (B, T0, D)
    logits = model.decoder.logits(hidden[:, -1])  # (B, V)
    next_pos = (T0 - pad_t)[:, None]  # (B, 1): position of the first generated token

    decode_step: Callable[[Tensor, Tensor], Tensor]  # (x (B,1,D), positions (B,1)) -> logits
    if cfg.cuda_graphs:
        graphed = GraphedStep(model.decoder, cache, cfg.graph_width)
        graphed.start_rows(range(B), T0, first=pads)

        def decode_step(x: Tensor, positions: Tensor) -> Tensor:
            return graphed(x)  # the step keeps every row's position itself

    elif (on_copies := CopyStep.build(model.decoder, cache)
          if cfg.copy_step and not padded else None):

        def decode_step(x: Tensor, positions: Tensor) -> Tensor:
            return on_copies(x)  # unpadded rows: every position is the cache's length

    else:
        # Every step's mask is a prefix of one (B, 1, 1, capacity) mask: pad keys invalid,
        # every generated position valid (stopped rows keep feeding pads as valid keys).
        step_masks = None
        if padded:
            valid = torch.ones(B, capacity, dtype=torch.bool, device=device)
            valid[:, :T0] = key_valid
            step_masks = valid[:, None, None, :]  # (B, 1, 1, capacity)

        def decode_step(x: Tensor, positions: Tensor) -> Tensor:
            mask = step_masks[..., : cache.length + 1] if step_masks is not None else None
            hidden = model.decoder(x, positions, mask, cache)  # (B, 1, D)
            return model.decoder.logits(hidden[:, -1])

    # Each step's choice and its log-probability stay on the device; the host reads them
    # once at the end (and at the stop checks), so a step does not wait for the GPU.
    chosen_ids = torch.zeros(B, max(steps, 1), dtype=torch.long, device=device)  # (B, steps)
    chosen_logp = torch.zeros(B, max(steps, 1), dtype=torch.float32, device=device)
    ban = repeat_ban(cfg, B, device, steps)
    done_t = torch.zeros(B, dtype=torch.bool, device=device)  # stopped at or before this step
    stop_t = torch.tensor(sorted(stops), device=device)
    stop_mask = vocabulary_mask(stops, dcfg.vocab_size, device)
    check_every = cfg.stop_check_every or (
        1 if device.type == "cpu" or step_hook is not None else 8
    )
    mirror = _HostTokens(B, stops) if step_hook is not None else None
    generated: list[list[int]] = []

    ran = 0
    for step in range(steps):
        chosen, chosen_logp[:, step] = greedy_choice(
            logits, ban, halted(halt, stop_t), barred(hold, stop_mask)
        )
        chosen_ids[:, step] = chosen
        ran = step + 1
        if step == steps - 1:
            break
        done_t |= torch.isin(chosen, stop_t)
        if mirror is not None:  # the hook needs the tokens on the host: one sync per step
            generated = mirror.add(chosen.tolist())
            if mirror.all_done:
                break
        elif ran % check_every == 0 and bool(done_t.all()):
            break
        feed = torch.where(done_t, dcfg.pad_token_id, chosen)[:, None]  # (B, 1)
        x = model.decoder.embed_tokens(feed)  # (B, 1, D)
        extra = None
        if step_hook is not None:
            extra = step_hook(generated, step)
        elif token_hook is not None:
            extra = token_hook(feed[:, 0], step)
        if extra is not None:
            if tuple(extra.shape) != (B, 1, D):
                hook = "step_hook" if step_hook is not None else "token_hook"
                raise InputError(
                    f"{hook} must return (B, 1, D) = ({B}, 1, {D}); got {tuple(extra.shape)}"
                )
            x = x + extra.to(device=device, dtype=dtype)
        logits = decode_step(x, next_pos)
        next_pos = next_pos + 1

    return _results(chosen_ids[:, :ran], chosen_logp[:, :ran], stops)


def greedy_choice(
    logits: Tensor,
    ban: RepeatBan | None,
    forced: tuple[Tensor, Tensor] | None = None,
    excluded: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Each row's greedy token under the no-repeat ``ban`` (which it then records) and that
    token's log-probability: (B,) long and (B,) float32 from ``logits`` (B, V).

    ``excluded = (rows (B,) bool, tokens (V,) bool)`` keeps those rows off those tokens
    (:func:`barred`); the log-probability stays the model's. ``forced = (rows (B,) bool,
    token ())`` gives those rows ``token`` with log-probability 0 instead (:func:`halted`)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    scores = ban(logp) if ban is not None else logp
    if excluded is not None:
        rows, tokens = excluded
        scores = scores.masked_fill(rows[:, None] & tokens[None], -math.inf)
    chosen = scores.argmax(dim=-1)  # (B,)
    chosen_logp = logp.gather(1, chosen[:, None])[:, 0]
    if forced is not None:
        rows, token = forced
        chosen = torch.where(rows, token, chosen)
        chosen_logp = torch.where(rows, 0.0, chosen_logp)
    if ban is not None:
        ban.push(chosen)
    return chosen, chosen_logp


def new_token_limit(model: OCRModel, cfg: GenerationConfig) -> int:
    """How many tokens a row may choose: ``cfg.max_new_tokens``, at most the decoder's
    ``max_positions`` (the KV cache is allocated for all of them before the first step)."""
    return min(cfg.max_new_tokens, model.cfg.decoder.max_positions)


def stop_tokens(model: OCRModel, cfg: GenerationConfig) -> set[int]:
    """The ids that stop a row: ``cfg``'s, else the model's EOS."""
    eos = model.cfg.decoder.eos_token_id
    return set(cfg.stop_token_ids if cfg.stop_token_ids is not None else (eos,))


def halted(halt: Halt | None, stop_ids: Tensor) -> tuple[Tensor, Tensor] | None:
    """What :func:`greedy_choice` forces for ``halt``'s rows: the largest of the sorted
    ``stop_ids``, a vocabulary id unless every stop id is outside it (never chosen)."""
    return None if halt is None else (halt(), stop_ids[-1])


def barred(hold: Hold | None, stop_mask: Tensor) -> tuple[Tensor, Tensor] | None:
    """What :func:`greedy_choice` keeps ``hold``'s rows off: the stop tokens of
    ``stop_mask`` (V,) (:func:`vocabulary_mask`)."""
    return None if hold is None else (hold(), stop_mask)


def vocabulary_mask(ids: set[int], vocab_size: int, device: torch.device) -> Tensor:
    """(V,) bool: True at each of ``ids`` inside the vocabulary."""
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    inside = [i for i in ids if 0 <= i < vocab_size]
    if inside:
        mask[torch.tensor(inside, device=device)] = True
    return mask


def repeat_ban(
    cfg: GenerationConfig, batch: int, device: torch.device, tokens: int
) -> RepeatBan | None:
    """The no-repeat guard ``cfg`` asks for, for ``batch`` rows that choose at most
    ``tokens`` tokens each, or ``None`` when it is off.

    Its window is at most ``tokens``: a row never has more tokens to look back over, so the
    bans are the same, and the guard's (B, window) buffer is not sized for a "no limit"
    window such as ``10**9`` (a failed 8 GB allocation per row)."""
    if cfg.no_repeat_ngram_size == 0:
        return None
    return RepeatBan(cfg.no_repeat_ngram_size, max(1, min(cfg.no_repeat_window, tokens)),
                     cfg.no_repeat_whitelist, batch, device)


class _HostTokens:
    """The host's copy of each row's tokens, for a ``step_hook`` (fed every step)."""

    def __init__(self, batch: int, stops: set[int]) -> None:
        self.generated: list[list[int]] = [[] for _ in range(batch)]
        self.done = [False] * batch
        self.stops = stops
        self.all_done = False

    def add(self, tokens: list[int]) -> list[list[int]]:
        for b, tok in enumerate(tokens):
            if self.done[b]:
                continue
            if tok in self.stops:
                self.done[b] = True
            else:
                self.generated[b].append(tok)
        self.all_done = all(self.done)
        return self.generated


def prompt_ids(model: OCRModel, prompts: Sequence[Prompt]) -> list[list[int]]:
    """Each prompt's ids, ``[bos] + prefix + <image>·S + suffix``, after checking its slots
    and that its prefix and suffix are ids of the vocabulary (else the embedding failed with
    a bare IndexError, TypeError or RuntimeError)."""
    dcfg = model.cfg.decoder
    D = dcfg.hidden_size
    rows = []
    for p in prompts:
        if p.slots.ndim != 2 or p.slots.shape[1] != D:
            raise InputError(f"prompt slots must be (S, {D}); got {tuple(p.slots.shape)}")
        prefix, suffix = (_prompt_ids(name, ids, dcfg.vocab_size)
                          for name, ids in (("prefix", p.prefix), ("suffix", p.suffix)))
        rows.append(
            [dcfg.bos_token_id, *prefix, *[dcfg.image_token_id] * p.slots.shape[0], *suffix]
        )
    return rows


def _prompt_ids(name: str, ids: Sequence[int], vocab_size: int) -> list[int]:
    """``ids`` as ints (any integer type, a 0-d integer tensor included), each checked to be
    in the vocabulary: :class:`InputError` naming the prompt's ``name`` part otherwise."""
    try:
        out = [operator.index(i) for i in ids if not isinstance(i, bool)]
    except TypeError:
        out = []
    if len(out) != len(ids) or any(not 0 <= i < vocab_size for i in out):
        raise InputError(f"prompt {name} must hold token ids in 0..{vocab_size - 1}, "
                         f"got {list(ids)!r}")
    return out


def row_result(ids: Sequence[int], logp: np.ndarray, stops: set[int]) -> Generated:
    """One row's result from the tokens it chose and their log-probabilities (float32).

    Tokens run up to the first stop; the confidence is the geometric mean of p(choice) over
    the tokens up to and including the stop, the log-probabilities summed left to right in
    float64 (a running sum, as a per-step Python ``+=`` would), whatever the row did after
    it stopped.
    """
    stop = next((i for i, tok in enumerate(ids) if tok in stops), None)
    counted = len(ids) if stop is None else stop + 1
    total = float(np.cumsum(logp[:counted], dtype=np.float64)[-1]) if counted else 0.0
    return Generated(
        token_ids=list(ids) if stop is None else list(ids[:stop]),
        finished=stop is not None,
        confidence=math.exp(total / counted) if counted else 1.0,
    )


def _results(chosen_ids: Tensor, chosen_logp: Tensor, stops: set[int]) -> list[Generated]:
    """:func:`row_result` for every row of a batch's (B, steps) choices."""
    logp = chosen_logp.cpu().numpy()
    return [row_result(row, logp[b], stops) for b, row in enumerate(chosen_ids.tolist())]
