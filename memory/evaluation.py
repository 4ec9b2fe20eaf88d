"""Measure the decay curve: how well a codec reads the memory's pages back at each tier.

Pages are laid out by the memory's own renderer, drawn once at Large and resampled to
every tier (exactly as decay does), encoded and decoded by the codec in batches, and
scored against the page transcripts (:mod:`opticmem.encoder.metrics`). Results are per
page; :func:`summarise` groups them by tier and text-token bucket, with Hangul pages
reported apart (they are a different reading problem: two-cell glyphs, 11,172 syllables).

Compression is the page's text tokens (the memory's text counter) over the tier's decoder
slots — the ratio a budget sees.

A page's decode time is its batch's wall time (encoding and decoding) divided by the pages
in the batch: an amortised figure at that batch size, the same for every page of a batch,
not the time one page takes alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageDraw

from opticmem.arguments import check_count
from opticmem.encoder.codec import Codec
from opticmem.encoder.metrics import (
    CHARACTER_KINDS,
    char_precision,
    exact_token_rate,
    fox_word_precision,
    misreads,
    read_by_kind,
)
from opticmem.render import (
    ORDER,
    PageLayout,
    RenderSettings,
    Tier,
    TurnText,
    draw_page,
    layout_pages,
    to_tier,
)

BUCKET = 100
"""Width of a text-token bucket (the paper's Table 2 uses 100-token buckets)."""


@dataclass(frozen=True, slots=True)
class PageScore:
    """How one page read back at one tier."""

    page: int
    tier: str
    text_tokens: int
    slots: int
    compression: float
    char_precision: float
    word_precision: float
    exact_found: int
    exact_total: int
    seconds: float
    hangul: bool
    confidence: float
    reference: str
    """The page's transcript."""
    recollected: str
    """What the codec read back."""


def is_hangul_page(text: str, threshold: float = 0.2) -> bool:
    """True when at least ``threshold`` of the page's non-space characters are Hangul."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return False
    hangul = sum(1 for c in chars if "\uac00" <= c <= "\ud7a3" or "\u1100" <= c <= "\u11ff")
    return hangul / len(chars) >= threshold


def evaluate(
    codec: Codec,
    pages: Sequence[PageLayout],
    *,
    count_tokens: Callable[[str], int],
    tiers: Iterable[Tier] = ORDER,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[PageScore]:
    """Score ``codec`` on ``pages`` at each tier; ``progress(n)`` is called per batch.
    A ``batch_size`` that is not a whole number ≥ 1 raises
    :class:`~opticmem.errors.ConfigurationError`."""
    check_count("batch_size", batch_size)  # range(0, n, -1) is empty: -1 scored no page
    texts = [p.transcript for p in pages]
    tokens = [count_tokens(t) for t in texts]
    out: list[PageScore] = []
    for tier in tiers:
        for lo in range(0, len(pages), batch_size):
            idx = range(lo, min(lo + batch_size, len(pages)))
            # Drawn per batch (a few ms a page): every page's 1.6 MB master held at once
            # took gigabytes for a long text file before the first page was read.
            images = [to_tier(draw_page(pages[i]), tier) for i in idx]
            t0 = time.perf_counter()
            recs = codec.decode(codec.encode(images, tier), max_new_tokens=max_new_tokens)
            per_page = (time.perf_counter() - t0) / len(idx)
            for i, rec in zip(idx, recs, strict=True):
                found, total = exact_token_rate(texts[i], rec.text)
                out.append(PageScore(
                    page=i,
                    tier=tier.value,
                    text_tokens=tokens[i],
                    slots=tier.slots,
                    compression=tokens[i] / tier.slots,
                    char_precision=char_precision(texts[i], rec.text),
                    word_precision=fox_word_precision(texts[i], rec.text),
                    exact_found=found,
                    exact_total=total,
                    seconds=per_page,
                    hangul=is_hangul_page(texts[i]),
                    confidence=rec.confidence,
                    reference=texts[i],
                    recollected=rec.text,
                ))
            if progress:
                progress(len(idx))
    return out


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the summary table.

    Compression, character and word precision and seconds are means over the row's pages
    (each page weighs the same, whatever its length); ``exact_rate`` is pooled: the ids
    found on all the row's pages over the ids on them (``None`` when they hold none).
    """

    tier: str
    group: str
    pages: int
    text_tokens: float
    compression: float
    char_precision: float
    word_precision: float
    exact_rate: float | None
    seconds: float


def _row(tier: str, group: str, scores: Sequence[PageScore]) -> Row:
    n = len(scores)
    found = sum(s.exact_found for s in scores)
    total = sum(s.exact_total for s in scores)
    return Row(
        tier=tier,
        group=group,
        pages=n,
        text_tokens=sum(s.text_tokens for s in scores) / n,
        compression=sum(s.compression for s in scores) / n,
        char_precision=sum(s.char_precision for s in scores) / n,
        word_precision=sum(s.word_precision for s in scores) / n,
        exact_rate=found / total if total else None,
        seconds=sum(s.seconds for s in scores) / n,
    )


def summarise(scores: Sequence[PageScore]) -> list[Row]:
    """Rows per tier: ``all`` (every page that is not a Hangul page), each text-token
    bucket ``lo-hi`` of those pages (``lo ≤ text tokens < hi``, ``BUCKET`` wide), and
    ``hangul`` (the Hangul pages, :func:`is_hangul_page`)."""
    rows: list[Row] = []
    for tier in ORDER:
        ts = [s for s in scores if s.tier == tier.value]
        latin = [s for s in ts if not s.hangul]
        if latin:
            rows.append(_row(tier.value, "all", latin))
            buckets: dict[int, list[PageScore]] = {}
            for s in latin:
                buckets.setdefault(s.text_tokens // BUCKET * BUCKET, []).append(s)
            for lo in sorted(buckets):
                rows.append(_row(tier.value, f"{lo}-{lo + BUCKET}", buckets[lo]))
        hangul = [s for s in ts if s.hangul]
        if hangul:
            rows.append(_row(tier.value, "hangul", hangul))
    return rows


def markdown_table(rows: Sequence[Row]) -> str:
    """The summary as a Markdown table."""
    head = ("| tier | pages | text tokens | slots/compression | char precision | "
            "Fox word precision | numbers/ids exact | s/page |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tier = Tier.parse(r.tier)
        exact = "–" if r.exact_rate is None else f"{100 * r.exact_rate:.1f}%"
        lines.append(
            f"| {r.tier} ({r.group}) | {r.pages} | {r.text_tokens:.0f} | "
            f"{tier.slots} / {r.compression:.1f}× | {100 * r.char_precision:.1f}% | "
            f"{100 * r.word_precision:.1f}% | {exact} | {r.seconds:.2f} |"
        )
    return "\n".join(lines)


_TEXT_FIELDS = ("reference", "recollected")


def write_results(scores: Sequence[PageScore], out_dir: Path, meta: dict[str, object]) -> Path:
    """Write the results to ``out_dir`` and return it.

    ``eval.json`` holds every page's scores and the summary, ``eval.md`` the table, and
    ``precision_vs_compression.png`` the plot. ``readback.jsonl`` holds each page's
    reference and read-back text, and ``misreads.md`` shows where the worst pages of each
    tier went wrong: the texts say what the numbers cannot.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarise(scores)
    numbers = [{k: v for k, v in asdict(s).items() if k not in _TEXT_FIELDS} for s in scores]
    (out_dir / "eval.json").write_text(json.dumps(
        {"meta": meta, "summary": [asdict(r) for r in rows], "pages": numbers},
        indent=1, ensure_ascii=False), encoding="utf-8")  # not the locale's: JSON is UTF-8
    (out_dir / "eval.md").write_text(markdown_table(rows) + "\n", encoding="utf-8")
    with (out_dir / "readback.jsonl").open("w", encoding="utf-8") as f:
        for s in scores:
            f.write(json.dumps({"page": s.page, "tier": s.tier,
                                "char_precision": s.char_precision, "reference": s.reference,
                                "recollected": s.recollected}, ensure_ascii=False) + "\n")
    (out_dir / "misreads.md").write_text(misreads_report(scores), encoding="utf-8")
    plot_precision(scores, out_dir / "precision_vs_compression.png")
    return out_dir


def misreads_report(scores: Sequence[PageScore], *, worst: int = 3, limit: int = 12) -> str:
    """Markdown: per tier, the ``worst`` pages by character precision and up to ``limit``
    of their misreads each (reference span → what was read)."""
    lines = ["# Misreads: where the worst pages of each tier went wrong", "",
             *kinds_table(kinds_by_tier(scores)), ""]
    for tier in ORDER:
        ranked = sorted((s for s in scores if s.tier == tier.value and s.char_precision < 1.0),
                        key=lambda s: s.char_precision)[:worst]
        if not ranked:
            continue
        lines.append(f"## {tier.value}")
        for s in ranked:
            found = misreads(s.reference, s.recollected)
            lines += ["", f"page {s.page}: {100 * s.char_precision:.1f}% of characters, "
                          f"{len(s.reference)} expected, {len(s.recollected)} read, "
                          f"{len(found)} misread spans", ""]
            lines += [f"    {m}" for m in found[:limit]]  # an indented code block
            if len(found) > limit:
                lines.append(f"    … {len(found) - limit} more")
        lines.append("")
    return "\n".join(lines)


class ReadBack(Protocol):
    """What :func:`kinds_table` needs of a page read back (a :class:`PageScore` has it)."""

    @property
    def tier(self) -> str: ...
    @property
    def reference(self) -> str: ...
    @property
    def recollected(self) -> str: ...


def kinds_by_tier(scores: Iterable[ReadBack]) -> dict[str, dict[str, tuple[int, int]]]:
    """``{tier: {kind: (read back in place, in the references)}}`` summed over the pages
    (:func:`~opticmem.encoder.metrics.read_by_kind`), for the tiers present, in tier order
    and every kind of :data:`~opticmem.encoder.metrics.CHARACTER_KINDS`."""
    counts: dict[str, dict[str, list[int]]] = {}
    for s in scores:
        tier = counts.setdefault(s.tier, {kind: [0, 0] for kind in CHARACTER_KINDS})
        for kind, (read, n) in read_by_kind(s.reference, s.recollected).items():
            tier[kind][0] += read
            tier[kind][1] += n
    return {t.value: {kind: (r, n) for kind, (r, n) in counts[t.value].items()}
            for t in ORDER if t.value in counts}


def kinds_table(by_tier: dict[str, dict[str, tuple[int, int]]]) -> list[str]:
    """Markdown lines of :func:`kinds_by_tier`: the share of each kind read back."""
    header = ["tier", *CHARACTER_KINDS]
    lines = ["Characters read back in place, by kind (share of the reference's, aligned "
             "as the misreads are):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for tier, counts in by_tier.items():
        cells = [f"{100 * r / n:.1f}% of {n}" if n else "—" for r, n in counts.values()]
        lines.append(f"| {tier} | " + " | ".join(cells) + " |")
    return lines


_COLOURS = {"large": (31, 119, 180), "base": (44, 160, 44), "small": (255, 127, 14),
            "tiny": (214, 39, 40)}


def plot_precision(scores: Sequence[PageScore], path: Path, size: tuple[int, int] = (900, 560)
                   ) -> Path:
    """Character precision against compression, one colour per tier (a Pillow drawing)."""
    w, h = size
    left, right, top, bottom = 70, 150, 30, 60
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [s for s in scores if not s.hangul] or list(scores)
    xmax = max([s.compression for s in pts] + [1.0]) * 1.1
    ymin = min([s.char_precision for s in pts] + [0.9]) - 0.02
    ymin = max(0.0, min(ymin, 0.9))

    def xy(x: float, y: float) -> tuple[float, float]:
        return (left + (w - left - right) * x / xmax,
                h - bottom - (h - top - bottom) * (y - ymin) / (1.0 - ymin))

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for k in range(6):
        y = ymin + (1.0 - ymin) * k / 5
        _, py = xy(0, y)
        d.line([left - 4, py, left, py], fill="black")
        d.text((8, py - 6), f"{100 * y:.0f}%", fill="black")
    for k in range(6):
        x = xmax * k / 5
        px, _ = xy(x, ymin)
        d.line([px, h - bottom, px, h - bottom + 4], fill="black")
        d.text((px - 10, h - bottom + 8), f"{x:.0f}x", fill="black")
    d.text((left + 120, h - 22), "compression (text tokens / decoder slots)", fill="black")
    d.text((8, 8), "character precision", fill="black")
    for i, tier in enumerate(ORDER):
        col = _COLOURS[tier.value]
        for s in pts:
            if s.tier == tier.value:
                px, py = xy(s.compression, s.char_precision)
                d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=col)
        d.rectangle([w - right + 15, top + 20 * i, w - right + 27, top + 20 * i + 12], fill=col)
        d.text((w - right + 33, top + 20 * i), tier.value, fill="black")
    img.save(path)
    return path


def heldout_pages(
    n: int, *, seed: int = 31337, hangul: int = 8, settings: RenderSettings | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[PageLayout], list[PageLayout]]:
    """Evaluation pages the codec never trained on: ``n`` chat pages from the generator's
    eval split (disjoint sources, another seed), and up to ``hangul`` pages of its Korean
    turns packed on their own pages. The eval sources ship with the package
    (:data:`~opticmem.encoder.synth.EVAL_SOURCES_DIR`), so every install evaluates on the
    same text. ``progress``, if given, is called with the number of pages just drawn
    (``eval``'s progress bar: drawing many pages took minutes without a sign of life)."""
    from opticmem.encoder import synth

    settings = settings or RenderSettings()
    src = synth.EVAL_SOURCES_DIR
    stream = synth.page_stream(seed, "eval", settings, data_dir=src)
    pages = []
    for _ in range(n):
        pages.append(next(stream))
        if progress is not None:
            progress(1)
    korean: list[TurnText] = []
    if hangul > 0:
        for conv in synth.conversations(seed + 1, "eval", data_dir=src):
            for t in conv:
                letters = t.text.replace(" ", "")
                if letters and sum("\uac00" <= c <= "\ud7a3" for c in letters) > 0.3 * len(letters):
                    korean.append(t)
            if len(korean) > 8 * hangul:
                break
    korean_pages = layout_pages(korean, settings)[:hangul] if korean else []
    if progress is not None:
        progress(len(korean_pages))
    return pages, korean_pages
