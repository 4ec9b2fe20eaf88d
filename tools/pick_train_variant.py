"""Pick the training step's variant from a ``benchmarks/train_speed.py`` table.

Reads the table of step mix rates (its columns found by their headers, so a new column
does not break it) and prints ``MOE=…`` and ``BATCH_SCALE=…`` lines for
``tools/device_train.sh``: the MoE path with the best mix rate at batch scale 1 (eager
decoder), and scale 2 only if that beats it by 25% while the step, not the loader,
bounds it — a larger batch changes the optimisation, not only the speed.

    python tools/pick_train_variant.py train_speed_h200.md > variant.env
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def rows(text: str) -> list[dict[str, str]]:
    """The rows of the table whose header has a "step mix rate" column."""
    out: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|"):
            header = None
        elif any(c.startswith("step mix rate") for c in cells):
            header = cells
        elif header is not None and not set("".join(cells)) <= set("-: "):
            out.append(dict(zip(header, cells, strict=False)))
    return out


def pick(text: str) -> tuple[str, int]:
    table = [r for r in rows(text) if r.get("decoder", "eager") == "eager"]
    rate_col = next((k for k in (table[0] if table else {}) if k.startswith("step mix rate")),
                    "")

    def rate(r: dict[str, str]) -> float:
        return float(r[rate_col])

    one = [r for r in table if float(r["batch scale"]) == 1]
    if not one:
        return "grouped", 1
    best = max(one, key=rate)
    two = [r for r in table if float(r["batch scale"]) == 2 and r["MoE"] == best["MoE"]]
    if two and rate(two[0]) > 1.25 * rate(best) and two[0].get("bound with the loader") == "step":
        return best["MoE"], 2
    return best["MoE"], 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("table", type=Path, help="a train_speed results file")
    args = ap.parse_args(argv)
    moe, scale = pick(args.table.read_text(encoding="utf-8"))
    sys.stdout.write(f"MOE={moe}\nBATCH_SCALE={scale}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
