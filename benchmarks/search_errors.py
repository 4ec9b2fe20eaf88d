"""Is the bundled codec's misreading a search error or a model error?

Greedy decoding keeps the likeliest token at each step; a wider search (beam search) can
only help where the whole true transcript scores higher under the model than what greedy
decoding read, i.e. where greedy search lost the model's own best reading. This decodes
held-out pages at each tier, then scores both the true transcript (as the tokenizer cuts
it, as in training) and the tokens greedy decoding generated, teacher-forced the way
training does (same page image, the aligner's cells laid out for each), and counts the
pages where the truth wins. Few such pages mean the errors are the model's, and only
training (or a larger model) moves the tier's precision; many mean a better search would.

Prints a table and writes ``benchmarks/results/search_errors_cpu.md`` (every tier unless
``--tiers`` names some)::

    OMP_NUM_THREADS=2 python -m benchmarks.search_errors [--tiers small,tiny] [--pages 16]
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import publish
from opticmem.encoder.bundled import load_bundled_codec, special_ids, training_step
from opticmem.encoder.examples import Example, collate, token_bytes
from opticmem.encoder.metrics import char_precision
from opticmem.encoder.ocr import OCRCodec
from opticmem.encoder.token_cursor import TokenCursor
from opticmem.evaluation import heldout_pages
from opticmem.render import RenderSettings, Tier, render_page

RESULTS = Path(__file__).parent / "results" / "search_errors_cpu.md"


def transcript_scores(
    codec: OCRCodec, image: np.ndarray, tier: Tier, readings: list[list[int]]
) -> list[tuple[float, int, int]]:
    """Each reading's (token ids') teacher-forced log-probability (nats, its EOS included)
    as the reading of ``image``, its token count and how many of its tokens the model
    ranks first given the tokens before them."""
    table = token_bytes(codec.tokenizer)
    cursor = TokenCursor(table, "cpu")
    examples = []
    for ids in readings:
        text = b"".join(table[i] for i in ids).decode("utf-8", "replace")
        examples.append(Example(image=image, tier=tier, ids=np.asarray(ids, dtype=np.int64),
                                cells=decoding_cells(cursor, ids), transcript=text))
    batch = collate(examples, **special_ids(codec.model.cfg.decoder))
    settings = codec.render_settings or RenderSettings()
    with torch.inference_mode():
        out = training_step(codec.model, batch, settings)
    logp = F.log_softmax(out.logits.float(), dim=-1)
    chosen = logp.gather(1, out.labels[:, None])[:, 0]
    top = logp.argmax(dim=-1) == out.labels
    result, start = [], 0
    for e in examples:
        n = len(e.ids) + 1  # the labelled steps of a row are its tokens and its EOS
        result.append((float(chosen[start:start + n].sum()), n - 1,
                       int(top[start:start + n - 1].sum())))
        start += n
    return result


def decoding_cells(cursor: TokenCursor, ids: Sequence[int]) -> np.ndarray:
    """``(n+1, 2)`` next-character cells before each of ``ids`` and after the last, as
    decoding follows them. On valid UTF-8 they equal training's
    (:func:`~opticmem.encoder.align.step_cells`); a reading may also hold bytes that are no
    character, which only the cursor places as decoding did."""
    state = cursor.start(1)
    cells = [TokenCursor.cells(state)[0]]
    for token in ids:
        state = cursor.advance(state, torch.tensor([token]))
        cells.append(TokenCursor.cells(state)[0])
    return torch.stack(cells).numpy()


def greedy_ids(codec: OCRCodec) -> list[list[int]]:
    """The token ids the codec generates, in the order it detokenizes them (a batch of
    one tier keeps its pages' order). Captured there because the text the codec returns
    is laid out on the page grid again, and a search compares the tokens generated."""
    captured: list[list[int]] = []
    detokenize = codec.detokenize

    def keep(ids: Sequence[int]) -> str:
        captured.append(list(ids))
        return detokenize(ids)

    codec.detokenize = keep  # type: ignore[method-assign]
    return captured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="large,base,small,tiny")
    parser.add_argument("--pages", type=int, default=16)
    parser.add_argument("--seed", type=int, default=31337, help="held-out pages' seed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    codec = load_bundled_codec(device="cpu")
    pages, _ = heldout_pages(args.pages, seed=args.seed, hangul=0)
    generated = greedy_ids(codec)
    lines = [
        "| tier | pages | char precision | truth nats/token | read nats/token | "
        "truth ranked first (teacher-forced) | pages where the truth scores higher |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier in (Tier.parse(t) for t in args.tiers.split(",")):
        images = [render_page(p, tier) for p in pages]
        generated.clear()
        reads = codec.decode(codec.encode(images, tier))
        precision, truth, read, first, tokens, wins = [], 0.0, 0.0, 0, 0, 0
        read_tokens = 0
        for page, image, rec, ids in zip(pages, images, reads, generated, strict=True):
            truth_ids = codec.tokenizer.encode(page.transcript, add_special_tokens=False).ids
            (lt, nt, ft), (lr, nr, _) = transcript_scores(
                codec, np.asarray(image), tier, [list(truth_ids), ids])
            precision.append(char_precision(page.transcript, rec.text))
            truth, read, first, tokens, read_tokens = (
                truth + lt, read + lr, first + ft, tokens + nt, read_tokens + nr)
            wins += lt > lr
            print(f"{tier.value} page: precision {precision[-1]:.3f}, truth {lt:.1f} nats, "
                  f"read {lr:.1f} nats", flush=True)
        lines.append(
            f"| {tier.value} | {len(pages)} | {100 * sum(precision) / len(precision):.2f}% | "
            f"{truth / tokens:.3f} | {read / read_tokens:.3f} | {100 * first / tokens:.1f}% | "
            f"{wins} of {len(pages)} |")
    text = "\n".join([
        "# Search errors or model errors: held-out pages, bundled codec",
        "",
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
        f"torch {torch.__version__}; held-out chat pages of seed {args.seed}, read greedily "
        "(the codec's defaults), then the true transcript and the text read back each "
        "(the generated tokens, before the codec lays them out on the grid again) "
        "scored teacher-forced on the same page (log-probability per token, EOS included; "
        "higher is likelier). Nats per token are pooled over the tier's pages.",
        "",
        *lines,
        "",
        "Where the truth scores lower than the reading on every page, a wider search "
        "(beam search) would move further from the truth, not closer: the misreadings are "
        "the model's, and only training or a larger model reduces them.",
        "",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
