"""The developer tools that rewrite committed files: ``--help`` only prints, and the model
card comes back byte for byte from the committed inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WRITTEN = {  # tool → the committed files it rewrites
    "write_model_card.py": [ROOT / "encoder/weights/MODEL_CARD.md"],
    "write_sample_conversation.py": [ROOT / "memory/data/sample_conversation.jsonl",
                                     ROOT / "memory/data/sample_questions.json"],
}


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_help_prints_usage_and_writes_nothing(name: str) -> None:
    before = {p: p.stat().st_mtime_ns for p in WRITTEN[name]}
    proc = tool(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")
    assert {p: p.stat().st_mtime_ns for p in WRITTEN[name]} == before


def test_model_card_reproduces_the_committed_one(tmp_path: Path) -> None:
    out = tmp_path / "MODEL_CARD.md"
    proc = tool("write_model_card.py", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (ROOT / "encoder/weights/MODEL_CARD.md").read_bytes()


def test_device_bench_refuses_an_unknown_step_before_setting_up() -> None:
    proc = subprocess.run(["bash", str(ROOT / "tools/device_bench.sh"), "codec", "refdecod"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert "unknown step 'refdecod'" in proc.stderr
    assert "pydantic" not in proc.stderr  # refused before tools/device_setup.sh ran


def test_benchmarks_help_runs_no_benchmark() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--help"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m benchmarks")
    assert "== python -m" not in proc.stdout  # what main() prints before each benchmark
