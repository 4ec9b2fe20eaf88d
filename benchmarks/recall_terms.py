"""How long recall takes to find the terms of a passage, per script.

Every page a memory seals, every reading of a page at a new tier and every query goes
through :func:`opticmem.recall.term_groups` (case folding, normal forms, accent folds,
bigrams of unspaced scripts, emoji, facts' cues). This times it on ~1,000-character
passages of chat text in several scripts, one core, best of ``--rounds``, and reports
microseconds per passage. ``--against FILE`` times another copy of ``recall.py`` (an
older commit's: ``git show REV:memory/recall.py > /tmp/recall_old.py``) in the same run,
so the two compare on one machine at one moment. Prints a table and writes
``benchmarks/results/recall_terms.md``::

    python -m benchmarks.recall_terms [--against /tmp/recall_old.py] [--append]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from benchmarks import publish
from opticmem import recall

RESULTS = Path(__file__).resolve().parent / "results" / "recall_terms.md"

SAMPLES = {
    "English": "Ticket ORI-140 ships on 2026-03-04; Alice asked Bob about the Titan "
               "milestone, the budget of $12,400 and the review on Friday at 10:30. ",
    "German": "Der Müller in Köln hat über die Straße geschrieben, dass das Büro im März "
              "größer wird und die Kosten bei 12.400 € liegen. ",
    "Korean": "오늘 회의에서 서울 파트너와 예산을 논의했습니다. 다음 주 금요일 10시 30분에 "
              "Titan 검토를 다시 합니다. ",
    "Japanese": "東京の会議は3月4日に移りました。予算は1万2千円で、担当は田中さんです。",
    "Arabic": "اجتمع أحمد مع الفريق في المدرسة يوم الخميس، وناقشوا الميزانية والموعد الجديد. ",
    "mixed": "Señor Müller asked about 서울 and 東京 plans, ticket ORI-140 🎉, C++ code. ",
}
"""One sentence of chat per script, repeated to :data:`CHARS` characters."""

CHARS = 1_000


def passages(chars: int = CHARS) -> dict[str, str]:
    """Each of :data:`SAMPLES` repeated to about ``chars`` characters."""
    return {name: (text * (chars // len(text) + 1))[:chars] for name, text in SAMPLES.items()}


def load_recall(path: Path) -> ModuleType:
    """Another copy of ``recall.py`` as a module of its own (its imports from opticmem
    resolve to this install)."""
    spec = importlib.util.spec_from_file_location("recall_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--against {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def best_us(fn: Callable[[str], object], text: str, calls: int, rounds: int) -> float:
    """The fastest of ``rounds`` runs of ``calls`` calls, in microseconds per call."""
    fn(text)  # warm caches
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(text)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--calls", type=int, default=200, help="calls per round")
    ap.add_argument("--rounds", type=int, default=7, help="best of this many rounds")
    ap.add_argument("--against", type=Path, help="another recall.py to time beside this one")
    ap.add_argument("--label", default="", help="what --against is (e.g. a commit)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing")
    args = ap.parse_args(argv)
    other = load_recall(args.against) if args.against else None
    texts = passages()
    rows = []
    for name, text in texts.items():
        now = best_us(recall.term_groups, text, args.calls, args.rounds)
        then = (best_us(other.term_groups, text, args.calls, args.rounds)
                if other is not None else None)
        same = other is None or other.term_groups(text) == recall.term_groups(text)
        rows.append((name, len(text), now, then, same))
    against = args.label or (str(args.against) if args.against else "")
    head = "| script | chars | µs per passage |"
    rule = "|---|---|---|"
    if other is not None:
        head += f" {against} µs | speed-up | same terms |"
        rule += "---|---|---|"
    title = "Recall term extraction speed (one core)"
    lines = [f"## {title}" if args.append else f"# {title}", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}; best of {args.rounds} rounds of "
             f"{args.calls} calls of `term_groups` per passage.", "", head, rule]
    for name, chars, now, then, same in rows:
        line = f"| {name} | {chars:,} | {now:.0f} |"
        if then is not None:
            line += f" {then:.0f} | {then / now:.2f}× | {'yes' if same else 'NO'} |"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    publish(text, args.out, append=args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
