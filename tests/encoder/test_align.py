"""Layout alignment: training-time and decode-time positions agree; the module's shapes."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opticmem.encoder.align import LayoutAligner, cell_centres, step_cells
from opticmem.encoder.token_cursor import TokenCursor, incomplete_tail
from opticmem.render import Cursor, RenderSettings, TurnText, layout_pages


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300),
       cuts=st.lists(st.integers(1, 8), min_size=1, max_size=400))
def test_token_cursor_agrees_with_step_cells(text: str, cuts: list[int]) -> None:
    """Whatever the token boundaries (even inside a UTF-8 character), both give one cell."""
    page = layout_pages([TurnText("user", text)])[0]
    data = page.transcript.encode()
    lengths, pos = [], 0
    for c in cuts:
        if pos >= len(data):
            break
        n = min(c, len(data) - pos)
        lengths.append(n)
        pos += n
    if pos < len(data):
        lengths.append(len(data) - pos)
    expected = step_cells(page.transcript, lengths).tolist()
    # Each piece is a token of its own, fed to row 0; row 1 gets the empty token only.
    pieces, off = [], 0
    for n in lengths:
        pieces.append(data[off : off + n])
        off += n
    cursor = TokenCursor([b"", *pieces], "cpu")
    state = cursor.start(2)
    got = [TokenCursor.cells(state)[0].tolist()]
    for i in range(len(pieces)):
        state = cursor.advance(state, torch.tensor([i + 1, 0]))
        got.append(TokenCursor.cells(state)[0].tolist())
    assert got == expected
    assert TokenCursor.cells(state)[1].tolist() == [0, 0]  # special tokens move nothing


VALID = ["a", " ", "\n", "é", "한", "中", "😀", "→", "\ufffd"]


@st.composite
def damaged_utf8(draw: st.DrawFn) -> bytes:
    """Valid characters, truncated multi-byte characters and stray continuation bytes.

    A stray continuation byte never follows a truncated character (it would extend it,
    possibly into an overlong or surrogate spelling, which TokenCursor judges by code
    point where Python's decoder shows several replacement marks)."""
    units: list[bytes] = []
    truncated = False
    for kind, ch, cut, stray in draw(st.lists(st.tuples(
            st.sampled_from(["char", "truncated", "stray"]), st.sampled_from(VALID),
            st.integers(1, 3), st.integers(0x80, 0xBF)), max_size=60)):
        data = ch.encode()
        if kind == "truncated" and len(data) > 1:
            units.append(data[: min(cut, len(data) - 1)])
            truncated = True
        elif kind == "stray" and not truncated:
            units.append(bytes([stray]))
        else:
            units.append(data)
            truncated = False
    return b"".join(units)


@settings(max_examples=150, deadline=None)
@given(data=damaged_utf8(), cuts=st.lists(st.integers(1, 8), min_size=1, max_size=200))
def test_token_cursor_follows_replacement_decoding(data: bytes, cuts: list[int]) -> None:
    """At every token boundary the cell is where Python's ``errors="replace"`` decoding of
    the bytes so far (less a character still incomplete) leaves the renderer's cursor."""
    pieces, off = [], 0
    for c in cuts:
        if off >= len(data):
            break
        pieces.append(data[off : off + c])
        off += len(pieces[-1])
    if off < len(data):
        pieces.append(data[off:])
    cursor = TokenCursor(pieces, "cpu")
    state, seen = cursor.start(1), b""
    for i, piece in enumerate(pieces):
        state = cursor.advance(state, torch.tensor([i]))
        seen += piece
        done = seen[: len(seen) - incomplete_tail(seen)]
        expected = Cursor()
        expected.feed(done.decode("utf-8", errors="replace"))
        assert TokenCursor.cells(state)[0].tolist() == list(expected.position)


def test_points_outside_the_grid_are_invalid() -> None:
    s = RenderSettings()
    _, valid = cell_centres(torch.tensor([[0, 0], [0, s.columns - 2], [s.rows - 1, 0]]), s,
                            LayoutAligner(8).config)
    assert valid[0].all()
    assert valid[1, :2].all() and not valid[1, 2:8].any()  # the line ends after 2 cells
    assert not valid[2, 8:].any()  # no line below the last row


def test_aligner_shapes_and_gradient_path() -> None:
    torch.manual_seed(0)
    al = LayoutAligner(16)
    torch.nn.init.normal_(al.mix[1].weight)
    grid = torch.randn(2, 8, 8, 16, requires_grad=True)
    out = al(grid, torch.tensor([[3, 5], [10, 100]]), torch.tensor([0, 1]), RenderSettings())
    assert out.shape == (2, 16)
    out.square().sum().backward()
    assert grid.grad is not None and grid.grad[0].abs().sum() > 0 and grid.grad[1].abs().sum() > 0
