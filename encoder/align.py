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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

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


class LayoutAligner(nn.Module):
    """Projects the vision tokens under the next cells into a decoder input embedding."""

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
        self._freqs: Tensor | None = None  # frequencies on the grid's device (see _frequencies)

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
        return self.mix(h.flatten(-2))  # (N, D)

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
