"""Growing a trained model deeper keeps what it computes (encoder.grow)."""

from __future__ import annotations

import pytest
import torch

from opticmem.encoder.config import preset
from opticmem.encoder.errors import InputError
from opticmem.encoder.grow import grow
from opticmem.encoder.model import OCRModel, build_model


@pytest.fixture(scope="module")
def model() -> OCRModel:
    return build_model(preset("test"), seed=3)


def outputs(m: OCRModel, pixels: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        grid = m.encode_grid(pixels)
        slots = m.grid_to_slots(grid)
        tokens = m.decoder.embed_tokens(ids)
        hidden = m.decoder(torch.cat([tokens[:, :1], slots, tokens[:, 1:]], dim=1))
        return grid, m.decoder.logits(hidden)


def test_a_grown_model_computes_what_it_grew_from(model: OCRModel) -> None:
    big = grow(model, sam_depth=4, clip_depth=3, decoder_layers=4, seed=9)
    assert (big.cfg.sam.depth, big.cfg.clip.depth, big.cfg.decoder.layers) == (4, 3, 4)
    assert big.cfg.sam.global_attn_indexes == model.cfg.sam.global_attn_indexes
    assert big.num_parameters() > model.num_parameters()
    pixels = torch.randn(2, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(4, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    for a, b in zip(outputs(model, pixels, ids), outputs(big.eval(), pixels, ids), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_the_new_blocks_can_learn(model: OCRModel) -> None:
    # Only the output projections start at zero: their inputs are not, so they get
    # gradients, and the rest of each new block is a fresh model's draw.
    big = grow(model, decoder_layers=3, seed=2).train()
    o_proj = big.decoder.layers[2].attn.o_proj.weight
    assert not o_proj.any() and big.decoder.layers[2].attn.q_proj.weight.any()
    pixels = torch.randn(1, 3, 512, 512)
    ids = torch.randint(4, 200, (1, 6))
    grid = big.encode_grid(pixels)
    tokens = big.decoder.embed_tokens(ids)
    hidden = big.decoder(torch.cat([tokens[:, :1], big.grid_to_slots(grid), tokens[:, 1:]], 1))
    big.decoder.logits(hidden).logsumexp(-1).sum().backward()
    assert o_proj.grad is not None and o_proj.grad.abs().sum() > 0


@pytest.mark.parametrize("depths", [{"sam_depth": 1}, {"decoder_layers": 1},
                                    {"clip_depth": 0}, {"clip_depth": 2.0}])
def test_shrinking_is_refused(model: OCRModel, depths: dict[str, object]) -> None:
    with pytest.raises(InputError, match="must be a whole number ≥ the present"):
        grow(model, **depths)  # type: ignore[arg-type]


def test_a_reader_added_to_the_aligner_changes_nothing_yet() -> None:
    from opticmem.encoder.align import AlignConfig
    from opticmem.encoder.bundled import aligned_embeds
    from opticmem.render import RenderSettings

    small = build_model(preset("test"), seed=5)
    assert small.aligner is not None
    for p in small.aligner.mix.parameters():  # trained: not the zero it starts at
        torch.nn.init.normal_(p, std=0.3)
    big = grow(small, reader_points=2, reader_hidden=16)
    assert big.cfg.align == AlignConfig(point_dim=16, reader_points=2, reader_hidden=16)
    grid = torch.randn(2, 8, 8, small.cfg.embed_dim)
    cells = torch.randint(0, 40, (2, 5, 2))
    rows, positions = torch.tensor([0, 0, 1]), torch.tensor([1, 4, 2])
    with torch.no_grad():
        _, a = aligned_embeds(small, grid, cells, rows, positions, RenderSettings())
        _, b = aligned_embeds(big, grid, cells, rows, positions, RenderSettings())
    assert a is not None and b is not None and a.abs().sum() > 0
    torch.testing.assert_close(b, a)
    with pytest.raises(InputError, match="has a reader"):
        grow(big, reader_points=1)
