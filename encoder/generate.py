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
fed back. ``prompt_extra`` (B, T, D) does the same for the prompt positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from opticmem.encoder.decoder import KVCache
from opticmem.encoder.errors import InputError
from opticmem.encoder.model import OCRModel
from opticmem.encoder.ngram import NGramGuard

StepHook = Callable[[list[list[int]], int], Tensor | None]
"""``(generated_ids, step) -> extra embeddings (B, 1, D) for the next input, or None``."""


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy decoding settings; the defaults follow the reference (n-gram 30 / window 90)."""

    max_new_tokens: int = 2048
    no_repeat_ngram_size: int = 30
    """0 turns the guard off."""
    no_repeat_window: int = 90
    no_repeat_whitelist: frozenset[int] = field(default_factory=frozenset)
    stop_token_ids: tuple[int, ...] | None = None
    """Defaults to the model's EOS id."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be ≥ 0, got {self.max_new_tokens}")
        if self.no_repeat_ngram_size < 0 or self.no_repeat_window < 1:
            raise InputError("no_repeat_ngram_size must be ≥ 0 and no_repeat_window ≥ 1")


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
    prompt_extra: Tensor | None = None,
) -> list[Generated]:
    """Decode every prompt greedily in one batch; results in input order."""
    cfg = config or GenerationConfig()
    dcfg = model.cfg.decoder
    B = len(prompts)
    if B == 0:
        return []
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    D = dcfg.hidden_size
    stops = set(cfg.stop_token_ids if cfg.stop_token_ids is not None else (dcfg.eos_token_id,))

    # ---- prompt ids, left-padded: [pad…] + [bos] + prefix + <image>·S + suffix
    rows: list[list[int]] = []
    for p in prompts:
        if p.slots.ndim != 2 or p.slots.shape[1] != D:
            raise InputError(f"prompt slots must be (S, {D}); got {tuple(p.slots.shape)}")
        rows.append(
            [dcfg.bos_token_id, *p.prefix, *[dcfg.image_token_id] * p.slots.shape[0], *p.suffix]
        )
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

    cache = KVCache(dcfg, B, T0 + max(cfg.max_new_tokens, 1), device, dtype)
    hidden = model.decoder(embeds, positions, mask, cache)  # (B, T0, D)
    logits = model.decoder.logits(hidden[:, -1])  # (B, V)
    next_pos = (T0 - pad_t)[:, None]  # (B, 1): position of the first generated token

    guards = (
        [
            NGramGuard(cfg.no_repeat_ngram_size, cfg.no_repeat_window, cfg.no_repeat_whitelist)
            for _ in range(B)
        ]
        if cfg.no_repeat_ngram_size > 0
        else None
    )
    generated: list[list[int]] = [[] for _ in range(B)]
    logp_sum = [0.0] * B
    counted = [0] * B
    finished = [False] * B
    done = [False] * B  # finished before this step: their choices no longer count
    done_t = torch.zeros(B, dtype=torch.bool, device=device)
    stop_t = torch.tensor(sorted(stops), device=device)

    for step in range(cfg.max_new_tokens):
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
        scores = logp
        if guards is not None:
            ban_rows: list[int] = []
            ban_cols: list[int] = []
            for b, guard in enumerate(guards):
                if not done[b]:
                    banned = guard.banned()
                    ban_rows += [b] * len(banned)
                    ban_cols += banned
            if ban_rows:
                scores = logp.clone()
                scores[
                    torch.tensor(ban_rows, device=device), torch.tensor(ban_cols, device=device)
                ] = float("-inf")
        chosen = scores.argmax(dim=-1)  # (B,)
        chosen_logp = logp.gather(1, chosen[:, None])[:, 0]
        tokens = chosen.tolist()
        lps = chosen_logp.tolist()
        for b in range(B):
            if done[b]:
                continue
            tok = tokens[b]
            logp_sum[b] += lps[b]
            counted[b] += 1
            if tok in stops:
                finished[b] = True
            else:
                generated[b].append(tok)
                if guards is not None:
                    guards[b].push(tok)
        done = list(finished)
        if all(done) or step == cfg.max_new_tokens - 1:
            break

        done_t |= torch.isin(chosen, stop_t)
        feed = torch.where(done_t, dcfg.pad_token_id, chosen)[:, None]  # (B, 1)
        x = model.decoder.embed_tokens(feed)  # (B, 1, D)
        if step_hook is not None:
            extra = step_hook(generated, step)
            if extra is not None:
                if tuple(extra.shape) != (B, 1, D):
                    raise InputError(
                        f"step_hook must return (B, 1, D) = ({B}, 1, {D}); "
                        f"got {tuple(extra.shape)}"
                    )
                x = x + extra.to(device=device, dtype=dtype)
        step_mask = None
        if padded:
            key_valid = torch.cat(
                [key_valid, torch.ones(B, 1, dtype=torch.bool, device=device)], dim=1
            )
            step_mask = key_valid[:, None, None, :]  # (B, 1, 1, Tk)
        hidden = model.decoder(x, next_pos, step_mask, cache)  # (B, 1, D)
        logits = model.decoder.logits(hidden[:, -1])
        next_pos = next_pos + 1

    return [
        Generated(
            token_ids=generated[b],
            finished=finished[b],
            confidence=math.exp(logp_sum[b] / counted[b]) if counted[b] else 1.0,
        )
        for b in range(B)
    ]
