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
    """:func:`banned_tokens` for a batch, as a handful of tensor ops (no host sync).

    ``history`` (B, ≥ L) holds each row's generated tokens, the first ``L`` of them filled;
    :meth:`__call__` returns the scores with ``-inf`` at each row's banned tokens. One step
    compares the last n−1 tokens with every (n−1)-token window that starts in the last
    ``window`` positions — (B, window, n−1) equality tests, nothing on a GPU.

    >>> import torch
    >>> ban = RepeatBan(n=3, window=90, whitelist=(), device=torch.device("cpu"))
    >>> history = torch.tensor([[5, 6, 7, 5, 6]])
    >>> ban(torch.zeros(1, 9), history, 5)[0].tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -inf, 0.0]
    """

    def __init__(
        self, n: int, window: int, whitelist: Iterable[int], device: torch.device
    ) -> None:
        if n < 1 or window < 1:
            raise ValueError(f"n-gram size and window must be ≥ 1, got n={n}, window={window}")
        self.n = n
        self.window = window
        allowed = sorted(set(whitelist))
        self._whitelist = torch.tensor(allowed, device=device) if allowed else None

    def __call__(self, scores: Tensor, history: Tensor, length: int) -> Tensor:
        """``scores`` (B, V) with every banned token at ``-inf`` (a new tensor if any may be)."""
        n, L = self.n, length
        lo = max(0, L - self.window)
        starts = L - n + 1 - lo  # start positions i in [lo, L − n]
        if n > L or starts <= 0:
            return scores
        follow = history[:, lo + n - 1 : L]  # (B, starts): the token after each window
        match: Tensor | None = None
        if n > 1:
            last = history[:, L - n + 1 : L]  # (B, n−1)
            windows = history[:, lo : L - 1].unfold(1, n - 1, 1)  # (B, starts, n−1)
            match = (windows == last[:, None, :]).all(dim=-1)  # (B, starts)
        if self._whitelist is not None:
            free = ~torch.isin(follow, self._whitelist)
            match = free if match is None else match & free
        V = scores.shape[-1]
        # Unbanned starts point at an extra column that is dropped again: no duplicate index
        # ever gets two different values, so the scatter is deterministic.
        index = follow if match is None else torch.where(match, follow, V)
        out = F.pad(scores, (0, 1))  # (B, V + 1)
        out.scatter_(1, index, float("-inf"))
        return out[:, :V]
