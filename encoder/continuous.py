"""Continuous batching: decode more prompts than a batch holds, refilling rows as they end.

:func:`~opticmem.encoder.generate.generate` runs a batch until its longest sequence stops,
so rows whose page ended early sit idle: a batch of the bundled codec's Small pages ran
~1,490 steps for a mean of ~900 tokens per page (40% of the row-steps idle).
:func:`generate_continuous` keeps ``rows`` sequences in flight instead. At each stop check
the rows that stopped hand back their results; once enough rows are free, the next
prompts are prefilled as one small batch and loaded into those rows of the KV cache
(:meth:`~opticmem.encoder.decoder.KVCache.load_rows`). Every row keeps its own cache column
and position (:class:`~opticmem.encoder.cuda_graph.GraphedStep`, one CUDA graph replay per
step on a GPU), so rows at any length share a step.

Each prompt's result is what :func:`generate` gives for it: the same greedy choices, the
same no-repeat bans (:class:`~opticmem.encoder.ngram.RepeatBan` resets a row when it
starts a new prompt), the same stop rule and confidence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from opticmem.encoder.cuda_graph import GraphedStep
from opticmem.encoder.decoder import KVCache
from opticmem.encoder.errors import InputError
from opticmem.encoder.generate import (
    Generated,
    GenerationConfig,
    Halt,
    Hold,
    Prompt,
    barred,
    greedy_choice,
    halted,
    new_token_limit,
    prompt_ids,
    repeat_ban,
    row_result,
    stop_tokens,
    vocabulary_mask,
)
from opticmem.encoder.model import OCRModel

log = logging.getLogger(__name__)


class RowFeed(Protocol):
    """Extra input embeddings for rows that change prompt, such as the layout aligner's
    reading of the page each row decodes (:class:`~opticmem.encoder.ocr.AlignerFeed`)."""

    def start(self, rows: Tensor, prompts: Sequence[int]) -> Tensor | None:
        """``rows`` (k,) now decode ``prompts`` (indices into the prompt list): reset their
        state and return what to add at each prompt's last position (k, D), or ``None``."""
        ...

    def __call__(self, tokens: Tensor, step: int) -> Tensor | None:
        """Every row is fed ``tokens`` (B,): what to add to their embeddings (B, 1, D)."""
        ...


@torch.inference_mode()
def generate_continuous(
    model: OCRModel,
    prompts: Sequence[Prompt],
    config: GenerationConfig | None = None,
    *,
    rows: int,
    feed: RowFeed | None = None,
    refill_at: int | None = None,
    prefill_batch: int = 256,
    halt: Halt | None = None,
    hold: Hold | None = None,
) -> list[Generated]:
    """Decode every prompt greedily with ``rows`` sequences in flight; results in input order.

    ``refill_at`` free rows (at most ``rows``) trigger a refill (default: a sixteenth of
    the rows): each refill pays a host sync and an eager prefill, so rows wait a few steps
    to share one.
    ``prefill_batch`` bounds how many prompts are prefilled at once. ``halt`` and ``hold``
    stop rows and keep them going as in :func:`~opticmem.encoder.generate.generate`.
    """
    cfg = config or GenerationConfig()
    if rows < 1:
        raise InputError(f"rows must be ≥ 1, got {rows}")
    if prefill_batch < 1:
        raise InputError(f"prefill_batch must be ≥ 1, got {prefill_batch}")
    ids = prompt_ids(model, prompts)
    N, M = len(prompts), new_token_limit(model, cfg)
    if N == 0:
        return []
    if M == 0:
        return [Generated([], False, 1.0) for _ in range(N)]
    dcfg = model.cfg.decoder
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    stops = stop_tokens(model, cfg)
    stop_ids = np.array(sorted(stops))
    stop_t = torch.from_numpy(stop_ids).to(device)
    stop_mask = vocabulary_mask(stops, dcfg.vocab_size, device)
    B = min(rows, N)
    # At most the rows there are: a threshold above them is never met once every row has
    # ended, and decoding would spin on with prompts still waiting.
    refill_at = max(1, B // 16) if refill_at is None else min(B, max(1, refill_at))
    # No more than the token limit: every row has stopped by then, and a longer wait (a
    # "never check" 10**9) only ran idle steps into buffers and a cache sized for it.
    check = min(cfg.stop_check_every or (1 if device.type == "cpu" else 8), M)
    horizon = M + check  # a row chooses at most this many tokens before a check stops it

    cache = KVCache(dcfg, B, max(map(len, ids)) + horizon, device, dtype)
    step = GraphedStep(model.decoder, cache, cfg.graph_width)
    ban = repeat_ban(cfg, B, device, M)
    logits = torch.zeros(B, dcfg.vocab_size, device=device, dtype=dtype)
    chosen_ids = torch.zeros(B, check, dtype=torch.long, device=device)
    chosen_logp = torch.zeros(B, check, dtype=torch.float32, device=device)
    # The host's copy of each row's choices since its prompt started, read at each check.
    host_ids = np.zeros((B, horizon), dtype=np.int64)
    host_logp = np.zeros((B, horizon), dtype=np.float32)
    prompt_of = np.full(B, -1)  # the prompt each row decodes, −1 when free
    started = np.zeros(B, dtype=np.int64)  # the step at which the row's prompt started
    results: list[Generated | None] = [None] * N
    queue = iter(range(N))
    pending = N  # prompts not yet given a row
    busy_row_steps = refills = 0  # for the summary logged at the end

    def prefill(free: np.ndarray, at_step: int) -> None:
        """Load the next prompts into rows ``free``; their first choice comes from ``logits``."""
        nonlocal logits, pending, refills
        take = [i for _, i in zip(range(len(free)), queue, strict=False)]
        pending -= len(take)
        refills += 1
        logits = logits.clone()  # a graph's output buffer: never write into it
        for lo in range(0, len(take), prefill_batch):
            group = take[lo : lo + prefill_batch]
            rows_np = free[lo : lo + len(group)]
            rows_t = torch.from_numpy(rows_np).to(device)
            lengths = [len(ids[i]) for i in group]
            T = max(lengths)
            padded = torch.tensor(
                [ids[i] + [dcfg.pad_token_id] * (T - len(ids[i])) for i in group], device=device
            )  # right-padded: causal attention keeps every real token off the pads
            last = torch.tensor(lengths, device=device) - 1
            at = torch.arange(len(group), device=device)
            extra = feed.start(rows_t, group) if feed is not None else None
            prompt_extra = None
            if extra is not None:
                prompt_extra = torch.zeros(len(group), T, dcfg.hidden_size, device=device,
                                           dtype=dtype)
                prompt_extra[at, last] = extra.to(dtype)
            slots = torch.cat([prompts[i].slots.to(device=device, dtype=dtype) for i in group])
            embeds = model.embed_inputs(padded, slots, prompt_extra)  # (k, T, D)
            scratch = KVCache(dcfg, len(group), T, device, dtype)
            hidden = model.decoder(embeds, None, None, scratch)  # (k, T, D)
            logits[rows_t] = model.decoder.logits(hidden[at, last])
            cache.load_rows(rows_t, scratch)
            step.start_rows(rows_np.tolist(), lengths)
            if ban is not None:
                ban.reset(rows_t)
            prompt_of[rows_np] = group
            started[rows_np] = at_step

    def collect(at_step: int) -> np.ndarray:
        """Read the last ``check`` choices; finish the rows that stopped. Returns free rows."""
        nonlocal busy_row_steps
        busy = np.flatnonzero(prompt_of >= 0)
        busy_row_steps += len(busy) * check
        if len(busy):
            chunk_ids = chosen_ids.cpu().numpy()[busy]  # waits for the device
            chunk_logp = chosen_logp.cpu().numpy()[busy]
            at = (at_step - check - started[busy])[:, None] + np.arange(check)  # (k, check)
            host_ids[busy[:, None], at] = chunk_ids
            host_logp[busy[:, None], at] = chunk_logp
            chosen = at_step - started[busy]  # tokens chosen so far per busy row
            stopped = (np.isin(chunk_ids, stop_ids) & (at < M)).any(axis=1) | (chosen >= M)
            for b, n in zip(busy[stopped], np.minimum(chosen, M)[stopped], strict=True):
                tokens = host_ids[b, :n].tolist()
                results[prompt_of[b]] = row_result(tokens, host_logp[b, :n], stops)
                prompt_of[b] = -1
            done = busy[stopped]
            if len(done):  # park them at a short length: idle rows must not set the width
                step.start_rows(done.tolist(), 1)
        return np.flatnonzero(prompt_of < 0)

    prefill(np.arange(B), 0)
    n = 0
    while True:
        if n and n % check == 0:
            free = collect(n)
            if pending and len(free) >= min(refill_at, pending):
                prefill(free, n)
            if not pending and (prompt_of < 0).all():
                break
        chosen, chosen_logp[:, n % check] = greedy_choice(
            logits, ban, halted(halt, stop_t), barred(hold, stop_mask)
        )
        chosen_ids[:, n % check] = chosen
        n += 1
        # A halted row's forced stop may be an id outside the vocabulary (a config that
        # never stops by itself); the row has ended, so any id in range will do for it.
        x = model.decoder.embed_tokens(chosen.clamp(0, dcfg.vocab_size - 1)[:, None])
        extra = feed(chosen, n - 1) if feed is not None else None
        if extra is not None:
            x = x + extra.to(dtype)
        logits = step(x)

    log.debug(
        "continuous decode: %d prompts through %d rows in %d steps; %.1f%% of row-steps busy; "
        "%d refills; %d attention widths recorded", N, B, n, 100 * busy_row_steps / (n * B),
        refills, step.captures,
    )
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]
