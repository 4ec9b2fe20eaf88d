"""The no-repeat n-gram guard of DeepSeek-OCR's reference decoding.

At each step, every token that would complete an n-gram already present in the last
``window`` generated tokens is banned, except whitelisted ids (the reference whitelists
the table tags ``<td>``/``</td>`` so tables can repeat). Reference settings: n = 30 over a
90-token window. Only generated tokens count, not the prompt.

:class:`NGramGuard` keeps an index from each (n−1)-token prefix to the positions where it
occurred, so a step costs O(n) rather than O(window·n).

>>> guard = NGramGuard(n=3, window=90)
>>> for t in [5, 6, 7, 5, 6]:
...     guard.push(t)
>>> guard.banned()
[7]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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
