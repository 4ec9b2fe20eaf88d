"""Export the synthetic-text generator's sources to a data directory (and the test fixture).

The generator (``opticmem.encoder.synth``) samples from word lists, Faker entity pools and
stdlib code. Building those needs ``wordfreq`` and ``faker``, which the GPU machine does
not have; this tool builds them once and writes a compact directory that the generator
reads on its own::

    python tools/export_synth_sources.py                 # → data/synth (≈ 8 MB)
    python tools/export_synth_sources.py --out /tmp/s    # elsewhere
    python tools/export_synth_sources.py --fixture       # → tests/encoder/fixtures/synth
    python tools/export_synth_sources.py --packaged-eval --from data/synth
                                     # → encoder/eval_sources (opticmem eval's held-out text)

The fixture is a small slice of a full export (the most frequent words, the first
entities and snippets of each pool): a subset of each split's sources, so everything the
tests check about train/eval disjointness holds for it exactly as for the full export.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from opticmem.encoder.synth import (
    EVAL_SOURCES_DIR,
    SPLITS,
    Sources,
    Split,
    build_sources,
    read_sources,
    write_sources,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIR = ROOT / "tests" / "encoder" / "fixtures" / "synth"

log = logging.getLogger("export_synth_sources")


def slice_sources(sources: dict[Split, Sources], words: int, ko_words: int, pool: int,
                  code: int) -> dict[Split, Sources]:
    """A subset of each split: the words among the ``words`` (``ko_words``) most frequent
    of either split, so a word shared by both splits is kept in both or in neither, and
    the first ``pool`` entities and ``code`` snippets of each pool."""
    keep_en = {w for src in sources.values() for w in src.en_words[:words]}
    keep_ko = {w for src in sources.values() for w in src.ko_words[:ko_words]}
    out: dict[Split, Sources] = {}
    for s, src in sources.items():
        en = [i for i, w in enumerate(src.en_words) if w in keep_en]
        ko = [i for i, w in enumerate(src.ko_words) if w in keep_ko]
        out[s] = Sources(
            split=src.split,
            en_words=tuple(src.en_words[i] for i in en),
            en_freq=tuple(src.en_freq[i] for i in en),
            ko_words=tuple(src.ko_words[i] for i in ko),
            ko_freq=tuple(src.ko_freq[i] for i in ko),
            pools={k: v[:pool] for k, v in src.pools.items()},
            code=src.code[:code],
            modules=src.modules,
            origin=src.origin,
        )
    return out


PACKAGED_EVAL_SLICE = {"words": 20_000, "ko_words": 6_000, "pool": 1_500, "code": 400}
"""How much of the eval split ships with the package: enough variety for a faithful
held-out evaluation at a few hundred KB."""


def write_packaged_eval(sources: dict[Split, Sources], origin: object) -> None:
    """Write the eval split's packaged slice (see :data:`PACKAGED_EVAL_SLICE`)."""
    part = slice_sources(sources, **PACKAGED_EVAL_SLICE)
    sizes = write_sources({"eval": part["eval"]}, EVAL_SOURCES_DIR,
                          {"slice_of": str(origin), "slice": PACKAGED_EVAL_SLICE})
    log.info("packaged eval sources: %.1f KB in %s", sum(sizes.values()) / 1024,
             EVAL_SOURCES_DIR)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "synth",
                    help="output directory (default: data/synth)")
    ap.add_argument("--pool-size", type=int, default=50_000,
                    help="entities per large pool and split (small pools get a fifth)")
    ap.add_argument("--code-size", type=int, default=6_000, help="code snippets per split")
    ap.add_argument("--fixture", action="store_true",
                    help=f"also write the small test fixture to {FIXTURE_DIR.relative_to(ROOT)}")
    ap.add_argument("--packaged-eval", action="store_true",
                    help="write a slice of the eval split to "
                         f"{EVAL_SOURCES_DIR.relative_to(ROOT)} (shipped with the package)")
    ap.add_argument("--from", dest="source", type=Path, default=None,
                    help="slice an existing export instead of building (with --packaged-eval)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.source is not None and not args.packaged_eval:
        ap.error("--from only applies with --packaged-eval")
    if args.packaged_eval and args.source is not None:
        full = {s: read_sources(s, args.source) for s in SPLITS}
        write_packaged_eval(full, args.source)
        return 0

    t0 = time.perf_counter()
    sources = build_sources(pool_size=args.pool_size, code_size=args.code_size)
    log.info("built sources in %.0f s", time.perf_counter() - t0)
    sizes = write_sources(sources, args.out, {"pool_size": args.pool_size,
                                              "code_size": args.code_size})
    total = sum(sizes.values())
    for name, size in sizes.items():
        log.info("%-16s %9.1f KB", name, size / 1024)
    log.info("%-16s %9.1f KB in %s", "total", total / 1024, args.out)
    for s in SPLITS:
        src = sources[s]
        log.info("%s: %d English words, %d Korean words, %d snippets from %d modules", s,
                 len(src.en_words), len(src.ko_words), len(src.code), len(src.modules))
    if args.fixture:
        fixture = slice_sources(sources, words=5_000, ko_words=2_000, pool=150, code=60)
        fsizes = write_sources(fixture, FIXTURE_DIR, {"slice_of_pool_size": args.pool_size})
        log.info("fixture: %.1f KB in %s", sum(fsizes.values()) / 1024, FIXTURE_DIR)
    if args.packaged_eval:
        write_packaged_eval(sources, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
