"""The search-error benchmark scores readings the way decoding made them."""

from __future__ import annotations

import numpy as np

from benchmarks.search_errors import decoding_cells, greedy_ids, transcript_scores
from opticmem.encoder.align import step_cells
from opticmem.encoder.bundled import load_bundled_codec
from opticmem.encoder.examples import token_bytes
from opticmem.encoder.token_cursor import TokenCursor
from opticmem.render import Tier, TurnText, layout_pages, render_page


def test_decoding_cells_are_trainings_on_valid_text() -> None:
    codec = load_bundled_codec(device="cpu")
    table = token_bytes(codec.tokenizer)
    text = "User: 회의는 3월 4일 🎉 at 10:30.\nAssistant: ok — ticket OPS-4411 먼저!"
    ids = codec.tokenizer.encode(text, add_special_tokens=False).ids
    assert any(len(table[i]) and table[i][0] & 0xC0 == 0x80 for i in ids)  # split characters
    cells = decoding_cells(TokenCursor(table, "cpu"), ids)
    assert np.array_equal(cells, step_cells(text, [len(table[i]) for i in ids]))


def test_a_greedy_reading_scores_as_decoding_chose_it() -> None:
    codec = load_bundled_codec(device="cpu")
    [page] = layout_pages([TurnText("user", "Move the Titan review to March 14 at 09:30, "
                                             "and send the notes to ops@example.com.")])
    image = render_page(page, Tier.LARGE)
    generated = greedy_ids(codec)
    codec.decode(codec.encode([image], Tier.LARGE))
    [ids] = generated
    truth = codec.tokenizer.encode(page.transcript, add_special_tokens=False).ids
    (truth_nats, truth_n, _), (read_nats, read_n, first) = transcript_scores(
        codec, np.asarray(image), Tier.LARGE, [list(truth), ids])
    assert (truth_n, read_n) == (len(truth), len(ids))
    # Teacher-forced on the same page, the model ranks first every token it generated:
    # the scoring pass sees what decoding saw (prompt, aligner cells). This short page is
    # read right, or with misreadings the model prefers to the truth.
    assert first == read_n
    assert read_nats >= truth_nats
