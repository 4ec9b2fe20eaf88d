"""Compare two ``opticmem eval`` results page by page: is new weights' gain real?

Both evaluations read the same held-out pages (chat and Hangul pooled), so each page's
character precision under the new weights minus under the old is one paired sample. Per
tier, the table gives the mean of those differences with its standard error, and on how
many pages the new weights read better. A mean within about two standard errors of zero
is noise, whatever the rounded tier means say: the rule for shipping a training run.

    python tools/compare_evals.py benchmarks/results/codec_eval/eval.json new/eval.json

More pairs (``OLD NEW OLD2 NEW2 …``, e.g. evaluations of other ``--seed``s, other pages)
are pooled: every page of every pair is one more paired sample.

    python tools/compare_evals.py old/eval.json new/eval.json old7/eval.json new7/eval.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

TIERS = ("large", "base", "small", "tiny")


Key = tuple[int | str, ...]
"""``(page, tier)``, or ``(pair, page, tier)`` when several pairs are pooled."""


def page_precision(path: Path) -> dict[Key, float]:
    """``(page, tier) → character precision`` of one ``eval.json``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {(int(p["page"]), str(p["tier"])): float(p["char_precision"])
            for p in data["pages"]}


def compare(old: dict[Key, float], new: dict[Key, float]) -> list[dict[str, float | int | str]]:
    """Per tier (pages both evaluations read): means, paired difference and its standard
    error, in points, and the number of pages read better by ``new``."""
    rows: list[dict[str, float | int | str]] = []
    for tier in TIERS:
        keys = sorted(k for k in old if k[-1] == tier and k in new)
        if not keys:
            continue
        diffs = [new[k] - old[k] for k in keys]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        rows.append({"tier": tier, "pages": len(keys),
                     "old": 100 * statistics.fmean(old[k] for k in keys),
                     "new": 100 * statistics.fmean(new[k] for k in keys),
                     "diff": 100 * statistics.fmean(diffs), "se": 100 * se,
                     "better": sum(d > 0 for d in diffs)})
    return rows


def table(rows: list[dict[str, float | int | str]]) -> str:
    lines = ["| tier | pages | old | new | paired difference (points) | new reads better |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tier']} | {r['pages']} | {r['old']:.2f}% | {r['new']:.2f}% | "
                     f"{r['diff']:+.2f} ± {r['se']:.2f} | {r['better']} / {r['pages']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("old", type=Path, help="eval.json of the weights in use")
    parser.add_argument("new", type=Path, help="eval.json of the candidate weights")
    parser.add_argument("more", type=Path, nargs="*",
                        help="further OLD NEW pairs (other pages), pooled with the first")
    args = parser.parse_args()
    paths = [args.old, args.new, *args.more]
    if len(paths) % 2:
        parser.error("give evaluations in OLD NEW pairs")
    old: dict[Key, float] = {}
    new: dict[Key, float] = {}
    for i in range(0, len(paths), 2):
        pair = i // 2
        old.update({(pair, *k): v for k, v in page_precision(paths[i]).items()})
        new.update({(pair, *k): v for k, v in page_precision(paths[i + 1]).items()})
    rows = compare(old, new)
    if not rows:
        raise SystemExit("the two evaluations share no (page, tier): not the same pages")
    print(table(rows))


if __name__ == "__main__":
    main()
