"""Layout alignment: training-time and decode-time positions agree; the module's shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opticmem.encoder.align import AlignConfig, LayoutAligner, cell_centres, step_cells
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


def test_token_cursor_table_step_equals_the_general_step() -> None:
    """On CPU a row with no character pending advances by one table lookup; for every
    token of the shipped vocabulary it lands where the general form does."""
    from tokenizers import Tokenizer

    from opticmem.encoder.bundled import BUNDLED_TOKENIZER
    from opticmem.encoder.examples import token_bytes

    cursor = TokenCursor(token_bytes(Tokenizer.from_file(str(BUNDLED_TOKENIZER))), "cpu")
    tokens = torch.arange(cursor.vocab)
    g = torch.Generator().manual_seed(0)
    state = torch.stack([torch.randint(0, 50, (cursor.vocab,), generator=g),
                         torch.randint(0, 100, (cursor.vocab,), generator=g),
                         torch.zeros(cursor.vocab, dtype=torch.long),
                         torch.zeros(cursor.vocab, dtype=torch.long)], dim=1)
    assert torch.equal(cursor.advance(state, tokens), cursor._advance_full(state, tokens))
    assert (cursor.advance(state, tokens)[:, 2] > 0).any()  # some tokens end mid-character
    outside = torch.tensor([-1, cursor.vocab])  # ids outside the table take the general form
    assert torch.equal(cursor.advance(state[:2], outside), state[:2])


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


def test_the_cursors_width_table_is_the_renderers_for_every_code_point() -> None:
    """The table came from this Python's unicodedata while the renderer's widths come from
    the atlas's frozen Unicode table: on a newer Python the cursor would step a new emoji's
    box one cell where the page drew two."""
    from opticmem.encoder.token_cursor import char_width, codepoint_widths

    widths = codepoint_widths()
    assert all(int(widths[cp]) == char_width(chr(cp)) for cp in range(0x110000))


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


def _random_aligner(hidden: int, dtype: torch.dtype, reader: int = 0) -> LayoutAligner:
    torch.manual_seed(0)
    config = AlignConfig(reader_points=reader, reader_hidden=24) if reader else None
    al = LayoutAligner(hidden, config).to(dtype)
    for p in al.parameters():  # the output projection starts at zero: give it weights
        torch.nn.init.normal_(p, std=0.2)
    return al


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("page", [RenderSettings(), RenderSettings(page_pixels=640, margin=30,
                                                                   max_rows=9)])
@pytest.mark.parametrize("reader", [0, 3])
def test_prepared_grid_reads_what_the_forward_reads(
    dtype: torch.dtype, tol: float, page: RenderSettings, reader: int
) -> None:
    """read(prepare(grid)) is the forward, up to the rounding of a split sum: at every cell
    of the page, past its edges (clamped centres, invalid points) and far beyond; with a
    reader on the first points too."""
    al = _random_aligner(32, dtype, reader)
    grid = torch.randn(3, 10, 10, 32, dtype=dtype) * 4
    rows = [*range(-4, page.rows + 6), 500]
    cols = [*range(-4, page.columns + 12), 10_000]
    cells = torch.cartesian_prod(torch.tensor(rows), torch.tensor(cols))  # (N, 2)
    batch = torch.arange(cells.shape[0]) % 3
    with torch.no_grad():
        expected = al(grid, cells, batch, page)
        got = al.read(al.prepare(grid, page), cells, batch)
    scale = expected.abs().max().item()
    assert got.shape == expected.shape and got.dtype == dtype
    assert (got - expected).abs().max().item() <= tol * scale


def test_prepared_grid_as_the_decoding_feed_uses_it() -> None:
    """The call AlignerFeed makes: prepare once per batch of pages, read the cursor's cells
    each step (every row reads its own page)."""
    al = _random_aligner(16, torch.float32)
    page = RenderSettings()
    grid = torch.randn(2, 8, 8, 16)
    cursor = TokenCursor([b"", b"ab", b"\n  x"], "cpu")
    rows = torch.arange(2)
    with torch.inference_mode():
        prepared = al.prepare(grid, page)  # AlignerFeed.__init__
        state = cursor.start(2)
        for tokens in ([1, 2], [2, 1], [0, 2]):
            state = cursor.advance(state, torch.tensor(tokens))
            cells = TokenCursor.cells(state)
            got = al.read(prepared, cells, rows)  # AlignerFeed._read_cells
            torch.testing.assert_close(got, al(grid, cells, rows, page),
                                       rtol=2e-6, atol=2e-6)


def test_a_reader_starts_as_a_no_op_and_learns() -> None:
    """A reader added to a trained aligner changes nothing until it is trained (its last
    layer starts at zero), and its last layer gets gradients."""
    plain = _random_aligner(16, torch.float32)
    with_reader = LayoutAligner(16, AlignConfig(reader_points=2, reader_hidden=8))
    missing = with_reader.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("reader.") for k in missing)
    grid = torch.randn(2, 8, 8, 16)
    cells = torch.tensor([[0, 0], [3, 7], [9, 50]])
    batch = torch.tensor([0, 1, 1])
    page = RenderSettings()
    torch.testing.assert_close(with_reader(grid, cells, batch, page),
                               plain(grid, cells, batch, page))
    with_reader(grid, cells, batch, page).square().sum().backward()
    last = with_reader.reader[-1].weight  # type: ignore[index]
    assert last.grad is not None and last.grad.abs().sum() > 0


@pytest.mark.parametrize(("points", "message"), [(9, "at most align.ahead"), (-1, "≥ 0")])
def test_a_reader_on_more_points_than_the_line_has_is_refused(points: int, message: str) -> None:
    from opticmem.encoder.config import preset
    from opticmem.encoder.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        preset("bundled", align=AlignConfig(reader_points=points))
