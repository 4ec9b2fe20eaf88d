"""Where the next character goes, for a whole batch of decoding rows, on the device.

The layout aligner reads the vision tokens under the cell of the next character, and that
cell follows from the text decoded so far (:class:`opticmem.render.Cursor`: the grid is
monospace, every line break is in the text). Following it on the host costs a device sync
and a Python loop over the rows at every step, which at a batch of hundreds of pages is
most of the step. :class:`TokenCursor` follows it with tensors instead: each token's effect
on the cursor is tabulated once from its bytes, so a step is a few gathers and selects
over the batch, with no sync, and it can be recorded in a CUDA graph.

Byte-level tokens can split a UTF-8 character. A row's state is therefore ``(row, col,
need, bits)``: ``need`` continuation bytes still missing from a character begun by an
earlier token, and the code point bits read so far. Python's ``errors="replace"`` decoding
is followed where it is decided: a sequence cut short by a non-continuation byte, and each
stray continuation byte, count as one U+FFFD. A character completed across a token
boundary is judged by its code point alone (an overlong or surrogate spelling counts as
the one character it spells, where Python would show several replacement marks; decoders
of valid text never produce these).

On valid UTF-8 the cells equal :func:`opticmem.encoder.align.step_cells`, which training
uses, whatever the token boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import torch
from torch import Tensor

from opticmem.render.atlas import load_atlas

MAX_CODEPOINT = 0x10FFFF
STATE_FIELDS = 4
"""A row's state, in this order: row, col, need, bits."""


def sequence_length(lead: int) -> int:
    """Bytes of the UTF-8 sequence that byte ``lead`` begins (1 for ASCII and invalid leads)."""
    if lead >> 5 == 0b110:
        return 2
    if lead >> 4 == 0b1110:
        return 3
    return 4 if lead >> 3 == 0b11110 else 1


def incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` begin a UTF-8 character still missing bytes.

    >>> incomplete_tail("한".encode()[:2]), incomplete_tail(b"ab"), incomplete_tail("한".encode())
    (2, 0, 0)
    """
    for k in range(1, min(4, len(data)) + 1):
        b = data[-k]
        if b & 0xC0 == 0x80:  # continuation byte: look further back
            continue
        return k if sequence_length(b) > k else 0
    return 0


def char_width(ch: str) -> int:
    """Cells ``ch`` advances the cursor by (a space is always one), as the renderer draws it."""
    return 1 if ch == " " else load_atlas().width(ch)


@cache
def codepoint_widths() -> np.ndarray:
    """``(MAX_CODEPOINT + 1,)`` int8: the cells of every code point, made once per process."""
    atlas = load_atlas()
    wide = np.frombuffer(atlas.props, dtype=np.uint8)[: MAX_CODEPOINT + 1] & 1
    widths = (1 + wide).astype(np.int8)  # as Atlas.width: at the atlas's Unicode version
    for cp, (_, width) in atlas.index.items():  # the atlas's own glyphs win
        widths[cp] = width
    widths[ord(" ")] = 1
    return widths


def _payload(data: bytes) -> int:
    """The code point bits carried by continuation bytes ``data`` (6 each, in order)."""
    bits = 0
    for b in data:
        bits = (bits << 6) | (b & 0x3F)
    return bits


def token_effects(table: Sequence[bytes]) -> dict[str, np.ndarray]:
    """Per token id, what its bytes do to a cursor (arrays of length ``len(table)``).

    ``lead``: leading continuation bytes; ``lead_bits`` ``(V, 4)``: the payload of the first
    0–3 of them; ``body``: whether bytes follow them; ``newlines`` and ``width``: over the
    body's complete characters, the line breaks and the cells after the last one (all cells
    if none); ``tail_need`` and ``tail_bits``: a character the body begins but does not end.
    """
    V = len(table)
    out = {name: np.zeros(V, dtype=np.int64) for name in
           ("lead", "body", "newlines", "width", "tail_need", "tail_bits")}
    out["lead_bits"] = np.zeros((V, 4), dtype=np.int64)
    for t, data in enumerate(table):
        lead = 0
        while lead < len(data) and data[lead] & 0xC0 == 0x80:
            lead += 1
        out["lead"][t] = lead
        for k in range(1, min(lead, 3) + 1):
            out["lead_bits"][t, k] = _payload(data[:k])
        body = data[lead:]
        if not body:
            continue
        out["body"][t] = 1
        tail = incomplete_tail(body)
        if tail:
            first = body[-tail]
            need = sequence_length(first)
            out["tail_need"][t] = need - tail
            out["tail_bits"][t] = ((first & (0x7F >> need)) << 6 * (tail - 1)) | _payload(
                body[len(body) - tail + 1 :]
            )
            body = body[:-tail]
        text = body.decode("utf-8", errors="replace")
        out["newlines"][t] = text.count("\n")
        out["width"][t] = sum(char_width(ch) for ch in text.rsplit("\n", 1)[-1])
    return out


class TokenCursor:
    """Advances a batch of cursors by generated token ids, as tensors on one device.

    ``table[t]`` is token ``t``'s bytes (``b""`` for special tokens, which move nothing).
    :meth:`start` gives the state of rows at the top of a page; :meth:`advance` is a pure
    function of a state and a step's tokens, so it can be recorded in a CUDA graph.
    """

    def __init__(self, table: Sequence[bytes], device: torch.device | str) -> None:
        self.device = torch.device(device)
        effects = token_effects(table)
        self._fx = {k: torch.from_numpy(v).to(self.device) for k, v in effects.items()}
        self._widths = torch.from_numpy(codepoint_widths()).to(self.device)  # int8
        self._replacement = char_width("\ufffd")
        self.vocab = len(table)
        self._fresh = torch.from_numpy(self._fresh_effects(effects)).to(self.device)

    def start(self, batch: int) -> Tensor:
        """``(batch, 4)`` state of rows about to write a page's first character."""
        return torch.zeros(batch, STATE_FIELDS, dtype=torch.long, device=self.device)

    @staticmethod
    def cells(state: Tensor) -> Tensor:
        """``(B, 2)`` ``(row, col)`` of each row's next character."""
        return state[:, :2]

    def _fresh_effects(self, fx: dict[str, np.ndarray]) -> np.ndarray:
        """``(V, 5)``: each token's whole effect on a row with no character pending — lines
        down, the column after a line break, the columns added without one, and the new
        pending character's ``need`` and ``bits`` (:meth:`_advance_full` with ``need = 0``)."""
        body = fx["body"] > 0
        lines = np.where(body, fx["newlines"], 0)
        width = np.where(body, fx["width"], 0)
        return np.stack([lines, width, fx["lead"] * self._replacement + width,
                         np.where(body, fx["tail_need"], 0), np.where(body, fx["tail_bits"], 0)],
                        axis=1)

    def advance(self, state: Tensor, tokens: Tensor) -> Tensor:
        """The state after each row writes ``tokens`` (B,); ids outside the table move nothing.

        On CPU, when no row is in the middle of a character and every id is in the table
        (nearly every step), one table lookup gives the new state: a decoding step at batch
        1 is bound by per-op overhead, and the general form takes ~45 ops.
        """
        if (
            state.device.type == "cpu"
            and not bool(state[:, 2].any())
            and bool(((tokens >= 0) & (tokens < self.vocab)).all())
        ):
            effect = self._fresh[tokens]  # (B, 5)
            lines = effect[:, 0]
            col = torch.where(lines > 0, effect[:, 1], state[:, 1] + effect[:, 2])
            return torch.stack([state[:, 0] + lines, col, effect[:, 3], effect[:, 4]], dim=1)
        return self._advance_full(state, tokens)

    def _advance_full(self, state: Tensor, tokens: Tensor) -> Tensor:
        """:meth:`advance` for any state, as tensor ops without a host sync."""
        fx = self._fx
        known = (tokens >= 0) & (tokens < self.vocab)
        t = torch.where(known, tokens, 0)
        row, col, need, bits = state.unbind(1)
        lead = torch.where(known, fx["lead"][t], 0)
        body = known & (fx["body"][t] > 0)
        pending = need > 0
        lead_bits = fx["lead_bits"][t]  # (B, 4)
        # A character begun earlier: completed by the leading continuation bytes, cut short
        # by a body byte (one U+FFFD), or still waiting (the token is all continuation).
        complete = pending & (lead >= need)
        cut = pending & (lead < need) & body
        waiting = pending & (lead < need) & ~body
        code = (bits << (6 * need)) | lead_bits.gather(1, need.clamp(0, 3)[:, None])[:, 0]
        width = self._widths[code.clamp(0, MAX_CODEPOINT)].long()
        stray = torch.where(pending, torch.where(complete, lead - need, 0), lead)
        col = col + torch.where(complete, width, 0) + (stray + cut.long()) * self._replacement
        # The body: its complete characters, then a character it begins but does not end.
        lines = torch.where(body, fx["newlines"][t], 0)
        body_width = torch.where(body, fx["width"][t], 0)
        col = torch.where(lines > 0, body_width, col + body_width)
        row = row + lines
        kept = lead_bits.gather(1, lead.clamp(0, 3)[:, None])[:, 0]
        new_need = torch.where(body, fx["tail_need"][t], torch.where(waiting, need - lead, 0))
        new_bits = torch.where(
            body, fx["tail_bits"][t], torch.where(waiting, (bits << (6 * lead)) | kept, 0)
        )
        return torch.stack([row, col, new_need, new_bits], dim=1)
