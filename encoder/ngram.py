"""The no-repeat n-gram guard of DeepSeek-OCR's reference decoding.

At each step, every token that would complete an n-gram already present in the last
``window`` generated tokens is banned, except whitelisted ids (the reference whitelists
the table tags ``<td>``/``</td>`` so tables can repeat). Reference settings: n = 30 over a
90-token window. Only generated tokens count, not the prompt.

:class:`NGramGuard` keeps an index from each (n−1)-token prefix to the positions where it
occurred, so a step costs O(n) rather than O(window·n). :class:`RepeatBan` applies the
same rule to a whole batch as tensor ops on the scores' device, so decoding needs neither
the tokens on the host nor a Python loop over rows.

>>> guard = NGramGuard(n=3, window=90)
>>> for t in [5, 6, 7, 5, 6]:
...     guard.push(t)
>>> guard.banned()
[7]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def banned_tokens(
    generated: Sequence[int], n: int, window: int, whitelist: Iterable[int] = ()
) -> set[int]:
    """Reference definition (quadratic; used to test :class:`NGramGuard`).

    Bans ``generated[i+n-1]`` for every start ``i`` in ``[max(0, L−window), L−n]`` whose
    first n−1 tokens equal the last n−1 generated tokens.
    """
    L = len(generated)
    if n < 1 or n > L:
        return set()
    prefix = tuple(generated[L - n + 1 :])
    banned = {
        generated[i + n - 1]
        for i in range(max(0, L - window), L - n + 1)
        if tuple(generated[i : i + n - 1]) == prefix
    }
    return banned - set(whitelist)


class NGramGuard:
    """Incremental no-repeat n-gram state for one sequence."""

    def __init__(self, n: int, window: int, whitelist: Iterable[int] = ()) -> None:
        if n < 1 or window < 1:
            raise ValueError(f"n-gram size and window must be ≥ 1, got n={n}, window={window}")
        self.n = n
        self.window = window
        self.whitelist = frozenset(whitelist)
        self.tokens: list[int] = []
        self._starts: dict[tuple[int, ...], list[int]] = {}

    def push(self, token: int) -> None:
        """Append a generated token and index the n-gram it completes."""
        self.tokens.append(token)
        L, n = len(self.tokens), self.n
        if n <= L:
            start = L - n
            key = tuple(self.tokens[start : start + n - 1])
            self._starts.setdefault(key, []).append(start)

    def banned(self) -> list[int]:
        """Tokens that may not come next (sorted, whitelist removed)."""
        L, n = len(self.tokens), self.n
        if n > L:
            return []
        starts = self._starts.get(tuple(self.tokens[L - n + 1 :]))
        if not starts:
            return []
        lo = max(0, L - self.window)
        while starts and starts[0] < lo:  # positions only move out of the window
            starts.pop(0)
        return sorted({self.tokens[i + n - 1] for i in starts} - self.whitelist)


class RepeatBan:
    """:func:`banned_tokens` for a batch of rows, as a handful of fixed-shape tensor ops.

    Each row's last ``window`` generated tokens sit right-aligned in a (B, window) buffer;
    :meth:`push` shifts every row by the tokens just chosen, :meth:`reset` empties rows
    that start a new sequence, and :meth:`__call__` returns the scores with ``-inf`` at
    each row's banned tokens. Positions a row has not generated yet hold negative
    fillers, all different, so a window that reaches into them matches no other window:
    the rule needs no row length, and a batch whose rows started at different steps (or
    restarted) is banned exactly as :func:`banned_tokens` would ban each row on its own.
    A step compares the last n−1 tokens with every (n−1)-token window of the buffer —
    (B, window−n+1, n−1) equality tests, no host sync, and recordable in a CUDA graph.

    >>> import torch
    >>> ban = RepeatBan(n=3, window=90, whitelist=(), batch=1, device=torch.device("cpu"))
    >>> for t in [5, 6, 7, 5, 6]:
    ...     ban.push(torch.tensor([t]))
    >>> ban(torch.zeros(1, 9))[0].tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -inf, 0.0]
    """

    def __init__(
        self, n: int, window: int, whitelist: Iterable[int], batch: int, device: torch.device
    ) -> None:
        if n < 1 or window < 1:
            raise ValueError(f"n-gram size and window must be ≥ 1, got n={n}, window={window}")
        self.n = n
        self.window = window
        allowed = sorted(set(whitelist))
        self._whitelist = torch.tensor(allowed, device=device) if allowed else None
        self._fillers = -1 - torch.arange(window, device=device)  # (window,)
        self.recent = self._fillers.repeat(batch, 1)  # (B, window), newest last

    def reset(self, rows: Tensor) -> None:
        """Forget the tokens of ``rows`` (a (k,) index tensor): they start a new sequence."""
        self.recent[rows] = self._fillers

    def push(self, tokens: Tensor) -> None:
        """Append each row's newly generated token (B,)."""
        self.recent[:, :-1] = self.recent[:, 1:].clone()
        self.recent[:, -1] = tokens

    def __call__(self, scores: Tensor) -> Tensor:
        """``scores`` (B, V) with every banned token at ``-inf`` (a new tensor if any may be)."""
        n, recent = self.n, self.recent
        starts = self.window - n + 1  # window starts i with i + n − 1 inside the buffer
        if starts <= 0:
            return scores
        follow = recent[:, n - 1 :]  # (B, starts): the token after each window
        match = follow >= 0  # a filler is never banned
        if n > 1:
            last = recent[:, self.window - n + 1 :]  # (B, n−1)
            windows = recent[:, : self.window - 1].unfold(1, n - 1, 1)  # (B, starts, n−1)
            match &= (windows == last[:, None, :]).all(dim=-1)
        if self._whitelist is not None:
            match &= ~torch.isin(follow, self._whitelist)
        V = scores.shape[-1]
        # Unbanned starts point at an extra column that is dropped again: no duplicate index
        # ever gets two different values, so the scatter is deterministic. So do ids past
        # the scores (a halted row's forced stop id outside the vocabulary): never chosen,
        # nothing to ban.
        index = torch.where(match & (follow < V), follow, V)
        out = F.pad(scores, (0, 1))  # (B, V + 1)
        out.scatter_(1, index, float("-inf"))
        return out[:, :V]
