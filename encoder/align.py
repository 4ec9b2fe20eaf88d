"""Layout alignment: hand the decoder the vision tokens under the text it is about to write.

The bundled codec reads pages drawn on a monospace grid, so the cell where the next
character goes follows from the text decoded so far (:class:`opticmem.render.Cursor`).
Instead of hoping attention finds that cell among the page's vision tokens — in short
runs it found the cell but the decoder still did not learn to read — the aligner gathers
the vision tokens under the next few cells of the current line and the start of the next
line, tags each with where the cell sits inside its token, and adds a projection of all
that to the decoder's input embedding for the step. Only the page's own vision tokens
feed it, so the tier's compression is unchanged; the official preset has no aligner.

Positions are computed per decoder step from byte offsets: the step that predicts a token
starting at byte ``b`` of the transcript looks at the cell of the character containing
byte ``b`` (the cursor after every complete character before it). While decoding,
:class:`opticmem.encoder.token_cursor.TokenCursor` gives the same cells from the tokens
generated so far.

Decoding reads a page at every step, so :meth:`LayoutAligner.prepare` does once per batch
of pages what does not depend on the step: the ``point`` projection is linear, so its
vision-token part (after the per-token LayerNorm) is projected for every grid token at
once, and its position part (Fourier features of a cell's offset inside its token) is
tabulated per grid row and column. :meth:`LayoutAligner.read` then costs a few gathers,
adds and the ``mix`` projection per step instead of a LayerNorm and a ``point`` matmul
over every sampled vision token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opticmem.encoder.half_linear import HalfLinear
from opticmem.render import RenderSettings, transcript_positions


@dataclass(frozen=True, slots=True)
class AlignConfig:
    """Shape of the aligner: which cells it samples and how wide its projection is."""

    ahead: int = 8
    """Cells sampled along the current line, starting at the next character's cell."""
    below: int = 4
    """Cells sampled at the start of the next line (newline, indentation, end of page)."""
    point_dim: int = 128
    """Width each sampled point is projected to before the points are concatenated."""
    frequencies: tuple[int, ...] = (1, 2, 4)
    """Fourier frequencies encoding a cell's offset inside its vision token."""
    reader_points: int = 0
    """The first this many points along the line also go through the reader, a wider
    two-hidden-layer MLP added to their ``point`` projection (0: no reader). A vision token
    at Small covers ~56 cells: picking one cell's character out of it takes more than the
    ``point`` projection's single linear map (see ``tools/probe_tokens.py``)."""
    reader_hidden: int = 768
    """Width of the reader's hidden layers."""

    @property
    def points(self) -> int:
        return self.ahead + self.below

    @property
    def fourier_dim(self) -> int:
        return 4 * len(self.frequencies) + 1  # sin/cos × x/y × freqs, + a validity flag


def step_cells(transcript: str, token_bytes: Sequence[int]) -> np.ndarray:
    """``(n+1, 2)`` ``(row, col)`` of the next character before each of ``n`` tokens and
    after the last (where EOS is predicted). ``token_bytes`` are the tokens' byte lengths.

    >>> step_cells("ab\\nc", [2, 1, 1]).tolist()
    [[0, 0], [0, 2], [1, 0], [1, 1]]
    """
    pos = transcript_positions(transcript)  # cursor before each char, and after the last
    char_of_byte = np.repeat(
        np.arange(len(transcript)), [len(c.encode("utf-8", "surrogatepass")) for c in transcript]
    )
    total = len(char_of_byte)
    starts = np.concatenate([[0], np.cumsum(np.asarray(token_bytes, dtype=np.int64))])
    chars = np.where(
        starts < total, char_of_byte[np.minimum(starts, max(total - 1, 0))], len(transcript)
    )
    return pos[chars]


def cell_centres(
    cells: torch.Tensor, settings: RenderSettings, config: AlignConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Page coordinates in [0, 1) of the sampled cells for each step.

    ``cells``: ``(..., 2)`` integer ``(row, col)``. Returns ``(xy, valid)`` with ``xy`` of
    shape ``(..., P, 2)`` and ``valid`` ``(..., P)``: a point is valid when its cell lies on
    the page grid.
    """
    row, col = cells[..., 0:1], cells[..., 1:2]
    ahead = torch.arange(config.ahead, device=cells.device)
    below = torch.arange(config.below, device=cells.device)
    rows = torch.cat([row.expand(*row.shape[:-1], config.ahead),
                      (row + 1).expand(*row.shape[:-1], config.below)], dim=-1)
    cols = torch.cat([col + ahead, below.expand(*col.shape[:-1], config.below)], dim=-1)
    valid = (rows >= 0) & (rows < settings.rows) & (cols >= 0) & (cols < settings.columns)
    p = float(settings.page_pixels)
    x = (settings.margin + (cols.float() + 0.5) * 12.0) / p
    y = (settings.margin + (rows.float() + 0.5) * 24.0) / p
    return torch.stack([x, y], dim=-1).clamp(0.0, 1.0 - 1e-6), valid


class PreparedGrid(NamedTuple):
    """A batch of pages as :meth:`LayoutAligner.read` reads them; made by
    :meth:`LayoutAligner.prepare`, on the grid's device, in the ``point`` weight's dtype.

    A sampled point's ``point`` projection is the sum of three parts: its vision token's
    (``tokens``), its cell row's (``row_code``) and its cell column's (``col_code``). The
    row and column tables span every cell index whose centre lies on the page plus one
    clamped index at each end, which stands for every index beyond it (their centres clamp
    to the same page edge and they are all off the grid).
    """

    tokens: Tensor
    """``(B, g·g + 1, width)``: each vision token's LayerNorm through the ``point``
    weight's token columns, plus the validity flag's column; the extra last row is zeros:
    the token of every point off the grid (whose features and flag the forward zeroes).
    ``width`` is ``point_dim``, plus ``reader_hidden`` with a reader: its first layer's
    columns follow the ``point`` projection's, in this table and the two below."""
    row_token: Tensor
    """``(R,)`` long: ``g ×`` the token row holding each tabulated cell row, or ``g·g`` for
    rows off the grid; added to ``col_token``, anything ≥ ``g·g`` reads the zero row."""
    col_token: Tensor
    """``(C,)`` long: the token column holding each tabulated cell column, or ``g·g``."""
    row_code: Tensor
    """``(R, width)``: each row's Fourier features through the ``point`` weight's ``y``
    columns, plus the ``point`` bias."""
    col_code: Tensor
    """``(C, width)``: each column's Fourier features through the ``x`` columns."""
    row_offset: Tensor
    """``(P,)`` long: added to the cursor's row, each point's index into the row tables."""
    col_scale: Tensor
    """``(P,)`` long: 1 for points along the line (they follow the cursor's column), 0 for
    those at the start of the next line."""
    col_offset: Tensor
    """``(P,)`` long: added to ``col_scale ×`` the cursor's column, each point's index into
    the column tables."""


class LayoutAligner(nn.Module):
    """Projects the vision tokens under the next cells into a decoder input embedding."""

    FLOAT_WEIGHTS = ("point.weight", "reader.0.weight")
    """Weights an int8 checkpoint keeps in floating point
    (:func:`~opticmem.encoder.checkpoint.save_checkpoint`): each row reads a vision token's
    features and a cell's Fourier position code, whose weights are ~3× larger, so one int8
    scale per row left the token's columns ~40 levels. Quantized, ``point`` alone cost the
    shipped codec 10 points of precision at Small (+0.47 nats/token teacher-forced)."""

    def __init__(self, hidden: int, config: AlignConfig | None = None) -> None:
        super().__init__()
        self.config = config or AlignConfig()
        c = self.config
        self.norm = nn.LayerNorm(hidden)  # vision tokens can be large; read them at unit scale
        self.point = nn.Linear(hidden + c.fourier_dim, c.point_dim)
        out = nn.Linear(c.points * c.point_dim, hidden)
        nn.init.zeros_(out.weight)  # start as a no-op on the decoder
        nn.init.zeros_(out.bias)
        self.mix = nn.Sequential(nn.GELU(), out)
        self.reader: nn.Sequential | None = None
        if c.reader_points:
            last = nn.Linear(c.reader_hidden, c.point_dim)
            nn.init.zeros_(last.weight)  # a reader added to a trained aligner changes nothing
            nn.init.zeros_(last.bias)
            self.reader = nn.Sequential(
                nn.Linear(hidden + c.fourier_dim, c.reader_hidden), nn.GELU(),
                nn.Linear(c.reader_hidden, c.reader_hidden), nn.GELU(), last)
        self._freqs: Tensor | None = None  # frequencies on the grid's device (see _frequencies)
        self._out_half = HalfLinear()  # mix's projection, at every decoding step

    def forward(
        self, grid: torch.Tensor, cells: torch.Tensor, batch: torch.Tensor,
        settings: RenderSettings,
    ) -> torch.Tensor:
        """Embeddings for ``N`` decoder steps.

        ``grid`` ``(B, g, g, D)``: the pages' vision tokens; ``cells`` ``(N, 2)``: the next
        character's ``(row, col)`` at each step; ``batch`` ``(N,)``: which page each step
        reads. Returns ``(N, D)`` to add to those steps' input embeddings.
        """
        g = grid.shape[1]
        xy, valid = cell_centres(cells, settings, self.config)  # (N, P, 2), (N, P)
        gx, gy = xy[..., 0] * g, xy[..., 1] * g
        tx, ty = gx.floor().long(), gy.floor().long()  # token holding each cell centre
        flat = grid.reshape(grid.shape[0], g * g, -1)  # (B, g·g, D)
        feats = self.norm(flat[batch.unsqueeze(-1), ty * g + tx])  # (N, P, D)
        fx, fy = gx - tx, gy - ty  # offset of the cell inside its token, in [0, 1)
        freqs = self._frequencies(fx)
        ang = 2 * math.pi * torch.stack([fx, fy], dim=-1).unsqueeze(-1) * freqs  # (N,P,2,F)
        four = torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)  # (N, P, 4F)
        vflag = valid.unsqueeze(-1).to(feats.dtype)
        x = torch.cat([feats * vflag, four.to(feats.dtype), vflag], dim=-1)
        h = self.point(x)  # (N, P, point_dim)
        if self.reader is not None:
            r = self.config.reader_points
            h = torch.cat([h[:, :r] + self.reader(x[:, :r]), h[:, r:]], dim=1)
        return self.mix(h.flatten(-2))  # (N, D)

    def prepare(self, grid: Tensor, settings: RenderSettings) -> PreparedGrid:
        """Everything :meth:`read` needs of ``grid`` ``(B, g, g, D)``, computed once per
        batch of pages instead of at every decoding step.

        ``read(prepare(grid, s), cells, batch)`` equals ``forward(grid, cells, batch, s)``
        up to float rounding (the ``point`` projection's sum is split in three).
        """
        c = self.config
        B, g = grid.shape[0], grid.shape[1]
        D = grid.shape[-1]
        F2 = 2 * len(c.frequencies)
        # (point_dim [+ reader_hidden], D + 4F + 1): [token | x Fourier | y Fourier | flag];
        # the reader's first layer reads the same inputs, so it is tabulated alongside.
        w, bias = self._first_layers()
        w_token, w_x, w_y, w_flag = w.split([D, F2, F2, 1], dim=1)
        flat = grid.reshape(B, g * g, D)  # (B, g·g, D)
        tokens = F.linear(self.norm(flat), w_token) + w_flag[:, 0]  # (B, g·g, width)
        tokens = torch.cat([tokens, tokens.new_zeros(B, 1, w.shape[0])], dim=1)
        rows, row_low = _axis_range(settings.margin, 24, settings.page_pixels, settings.rows)
        cols, col_low = _axis_range(settings.margin, 12, settings.page_pixels, settings.columns)
        dev = grid.device
        row_ids = torch.arange(row_low, row_low + rows, device=dev)
        col_ids = torch.arange(col_low, col_low + cols, device=dev)
        # The forward's own arithmetic on cells (r, 0) and (0, c): bit-identical centres.
        y, row_valid = (t[:, 0] for t in cell_centres(
            torch.stack([row_ids, torch.zeros_like(row_ids)], dim=-1), settings, c))
        x, col_valid = (t[:, 0] for t in cell_centres(
            torch.stack([torch.zeros_like(col_ids), col_ids], dim=-1), settings, c))
        row_token, row_code = self._axis(y[:, 1], row_valid, g, w_y)
        col_token, col_code = self._axis(x[:, 0], col_valid, g, w_x)
        row_code = row_code + bias
        ahead, below = c.ahead, c.below

        def longs(values: list[int]) -> Tensor:
            return torch.tensor(values, device=dev, dtype=torch.long)

        return PreparedGrid(
            tokens=tokens,
            row_token=row_token * g,
            col_token=col_token,
            row_code=row_code,
            col_code=col_code,
            row_offset=longs([0] * ahead + [1] * below) - row_low,
            col_scale=longs([1] * ahead + [0] * below),
            col_offset=longs([*range(ahead), *range(below)]) - col_low,
        )

    def _first_layers(self) -> tuple[Tensor, Tensor]:
        """The ``point`` projection's weight and bias, with the reader's first layer's
        stacked below them when there is a reader."""
        assert self.point.bias is not None
        if self.reader is None:
            return self.point.weight, self.point.bias
        first = cast(nn.Linear, self.reader[0])
        return (torch.cat([self.point.weight, first.weight]),
                torch.cat([self.point.bias, first.bias]))

    def _axis(
        self, coord: Tensor, valid: Tensor, g: int, weight: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Cell centres along one axis ``(n,)`` → the token index holding each (``g·g`` when
        off the grid) and the ``point`` projection of its Fourier features ``(n, point_dim)``,
        as the forward computes them."""
        scaled = coord * g
        token = scaled.floor().long()
        frac = scaled - token  # offset inside the token, in [0, 1)
        ang = 2 * math.pi * frac.unsqueeze(-1) * self._frequencies(frac)  # (n, F)
        four = torch.cat([ang.sin(), ang.cos()], dim=-1).to(weight.dtype)  # (n, 2F)
        return torch.where(valid, token, g * g), F.linear(four, weight)

    def read(self, prepared: PreparedGrid, cells: Tensor, batch: Tensor) -> Tensor:
        """The forward on a grid from :meth:`prepare`: ``cells`` ``(N, 2)`` non-negative
        ``(row, col)``, ``batch`` ``(N,)`` → ``(N, D)``. A handful of gathers and adds over
        ``N × P`` points, then ``mix``: cheap enough for every decoding step.
        """
        p = prepared
        g2 = p.tokens.shape[1] - 1  # g·g: the zero row
        row, col = cells[:, :1], cells[:, 1:2]  # (N, 1) each
        ri = (row + p.row_offset).clamp_(0, p.row_code.shape[0] - 1)  # (N, P)
        ci = (col * p.col_scale + p.col_offset).clamp_(0, p.col_code.shape[0] - 1)
        token = (p.row_token[ri] + p.col_token[ci]).clamp_(max=g2)  # (N, P)
        h = p.tokens[batch[:, None], token] + p.row_code[ri] + p.col_code[ci]  # (N, P, width)
        if self.reader is not None:
            pd, r = self.config.point_dim, self.config.reader_points
            read = self.reader[1:](h[:, :r, pd:])  # the first layer's sum is h's tail
            h = torch.cat([h[:, :r, :pd] + read, h[:, r:, :pd]], dim=1)  # (N, P, pd)
        out = cast(nn.Linear, self.mix[1])
        return self._out_half(self.mix[0](h.flatten(-2)), out.weight, out.bias)  # (N, D)

    def _frequencies(self, like: Tensor) -> Tensor:
        """``config.frequencies`` as a tensor like ``like``, made once: building it from a list
        every decoding step would be a host-to-device copy, which waits for the GPU."""
        freqs = self._freqs
        if freqs is None or freqs.device != like.device or freqs.dtype != like.dtype:
            with torch.inference_mode(False):  # a normal tensor: training may use it too
                freqs = torch.tensor(
                    self.config.frequencies, device=like.device, dtype=like.dtype
                )
            self._freqs = freqs
        return freqs


def _axis_range(margin: int, cell: int, page: int, count: int) -> tuple[int, int]:
    """``(length, first)`` of the cell indices to tabulate along one axis: every index
    whose centre ``margin + (i + ½)·cell`` lies inside ``(0, page)``, plus one index at or
    past each edge, where the centre clamps; all indices beyond those read the same. The
    top end also reaches ``count`` (off the grid) in any case."""
    first = math.floor(-margin / cell - 0.5) - 1  # centre ≤ 0: clamps to 0, off the grid
    last = max(math.ceil((page - margin) / cell - 0.5) + 1, count)  # centre ≥ page, off it
    return last - first + 1, first
