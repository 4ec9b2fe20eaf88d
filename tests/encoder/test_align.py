"""Layout alignment: training-time and decode-time positions agree; the module's shapes."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opticmem.encoder.align import LayoutAligner, StepTracker, cell_centres, step_cells
from opticmem.render import RenderSettings, TurnText, layout_pages


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300),
       cuts=st.lists(st.integers(1, 8), min_size=1, max_size=400))
def test_tracker_agrees_with_step_cells(text: str, cuts: list[int]) -> None:
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
    tracker, got, off = StepTracker(), [], 0
    for n in lengths:
        got.append(list(tracker.position))
        tracker.feed(data[off : off + n])
        off += n
    got.append(list(tracker.position))
    assert got == expected


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
