"""Run every benchmark that needs no GPU, one after another (``make bench``).

Each writes its own table under ``benchmarks/results/``. GPU benchmarks
(``encoder_speed`` at the official size, ``codec_speed --device cuda``) run on a CUDA
machine by hand; they are included here only when CUDA is present.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CPU = [
    ["benchmarks.synth_speed"],
    ["benchmarks.memory_speed"],
    ["benchmarks.recall_terms"],
    ["benchmarks.redis_speed"],
    ["benchmarks.codec_speed", "--device", "cpu", "--tiers", "small,tiny", "--batches", "1,16",
     "--pages", "3", "--out", "benchmarks/results/codec_speed_cpu.md"],
    ["benchmarks.cpu_linear_forms"],
    ["benchmarks.cpu_decode_paths"],
    ["benchmarks.search_errors"],
]
GPU = [
    ["benchmarks.encoder_speed"],
    ["benchmarks.codec_speed", "--device", "cuda", "--tiers", "small,tiny",
     "--batches", "32,128"],
]


def main(argv: list[str] | None = None) -> int:
    # No options, but --help (or a typo) must not start the benchmarks, which rewrite
    # the committed tables under benchmarks/results/.
    argparse.ArgumentParser(prog="python -m benchmarks",
                            description=__doc__.splitlines()[0]).parse_args(argv)
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    failed = []
    for args in CPU + (GPU if cuda else []):
        print(f"== python -m {' '.join(args)}", flush=True)
        if subprocess.call([sys.executable, "-m", *args]) != 0:
            failed.append(args[0])
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
