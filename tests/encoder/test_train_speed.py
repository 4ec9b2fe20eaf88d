"""The training-throughput benchmark's CPU smoke run (``benchmarks/train_speed.py``).

It proves the wiring — the trainer's loader and its optimiser step, timed apart, both MoE
training paths — not the speed, which only the GPU machine measures.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.train_speed import StepRow, main, mix_rate
from opticmem.encoder import synth
from opticmem.render import Tier

FIXTURE = Path(__file__).parent / "fixtures" / "synth"


def test_mix_rate_weighs_each_tier_by_its_share_of_pages() -> None:
    # 100 pages at 100/s and 100 at 50/s take 3 s: 200 pages / 3 s.
    rows = [StepRow("dense", 1.0, 0, Tier.SMALL, 10, 100.0, None),  # 10 pages / 0.1 s
            StepRow("dense", 1.0, 0, Tier.TINY, 10, 200.0, None)]  # 10 pages / 0.2 s
    rate = mix_rate(rows, {"large": 0.0, "base": 0.0, "small": 0.5, "tiny": 0.5})
    assert rate == pytest.approx(200 / 3)


def test_smoke_run_times_the_loader_and_both_moe_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    out = tmp_path / "train_speed.md"
    assert main(["--smoke", "--out", str(out)]) == 0
    text = out.read_text()
    loader = re.search(r"\*\*Loader\*\* \(0 workers, (\d+) page-tiers in 2 s\): \*\*(\d+)", text)
    assert loader and int(loader.group(1)) > 0 and int(loader.group(2)) > 0
    steps = re.findall(
        r"^\| (grouped|dense) \| 1 \| eager \| tiny \| 2 \| ([\d.]+) \| (\d+) \| – \|$",
        text, flags=re.M)
    assert [s[0] for s in steps] == ["grouped", "dense"]
    assert all(float(ms) > 0 for _, ms, _ in steps)
    assert re.search(r"^\| dense \| 1 \| eager \| \d+ \| (step|loader) \|$", text, flags=re.M)


@pytest.mark.slow
def test_smoke_run_times_the_compiled_decoder_beside_the_eager_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(synth.DATA_ENV, str(FIXTURE))
    out = tmp_path / "train_speed.md"
    assert main(["--smoke", "--no-loader", "--moe", "grouped,dense", "--buckets", "0,2048",
                 "--out", str(out)]) == 0
    rows = re.findall(r"^\| (grouped|dense) \| 1 \| ([a-z0-9, ]+) \| tiny \| 2 \| ([\d.]+) \|",
                      out.read_text(), flags=re.M)
    # grouped does not compile: its bucketed variant is left out
    assert [(moe, decoder) for moe, decoder, _ in rows] == [
        ("grouped", "eager"), ("dense", "eager"), ("dense", "compiled, bucket 2048")]
    assert all(float(ms) > 0 for _, _, ms in rows)
