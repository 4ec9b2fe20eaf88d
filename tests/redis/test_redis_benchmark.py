"""The Redis benchmark scripts run end to end (tiny sizes) and write their tables."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.redis


def test_benchmark_smoke(tmp_path: Path) -> None:
    from benchmarks.redis_speed import IMPLS, main

    out = tmp_path / "redis_speed.md"
    assert main(["--smoke", "--out", str(out)]) == 0
    text = out.read_text()
    for name in IMPLS:
        assert f"| {name} |" in text
    assert "## Appends" in text and "## Whole-session read latency" in text
    assert "## Targets" in text


def test_queue_benchmark_smoke(tmp_path: Path) -> None:
    from benchmarks.queue_speed import main

    out = tmp_path / "queue_speed.md"
    assert main(["--smoke", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| lazy |" in text and "| queue |" in text
    assert "| 8 | none (in the worker) |" in text
