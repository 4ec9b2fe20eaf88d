"""The developer tools that rewrite committed files: ``--help`` only prints, and the model
card comes back byte for byte from the committed inputs."""

from __future__ import annotations

import os
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


def tool(name: str, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, **env} if env else None)


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


def test_the_training_variant_is_picked_from_the_benchmark_table() -> None:
    """The picker reads the committed H200 table (with its decoder column, whose arrival
    once made a fixed-column parser fall back to the slower grouped path unnoticed)."""
    committed = tool("pick_train_variant.py", "benchmarks/results/train_speed_h200.md")
    assert committed.returncode == 0, committed.stderr
    assert committed.stdout == "MOE=dense\nBATCH_SCALE=1\n"  # 321 page-tiers/s vs 260

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from pick_train_variant import pick
    finally:
        sys.path.pop(0)
    head = ("| MoE | batch scale | step mix rate (page-tiers/s) | bound with the loader |\n"
            "|---|---|---|---|\n")
    assert pick(head + "| grouped | 1 | 200 | step |\n| grouped | 2 | 260 | step |\n") == (
        "grouped", 2)
    assert pick(head + "| grouped | 1 | 200 | step |\n| grouped | 2 | 260 | loader |\n") == (
        "grouped", 1)
    assert pick("no table here\n") == ("grouped", 1)


def test_compare_evals_reports_the_paired_difference_per_tier(tmp_path: Path) -> None:
    import json

    old = ROOT / "benchmarks/results/codec_eval/eval.json"
    data = json.loads(old.read_text())
    for p in data["pages"]:
        if p["tier"] == "small":
            p["char_precision"] -= 0.01
    new = tmp_path / "eval.json"
    new.write_text(json.dumps(data))
    proc = tool("compare_evals.py", str(old), str(new))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines()[2:]}
    assert set(rows) == {"large", "base", "small", "tiny"}
    assert "| -1.00 ± 0.00 | 0 / 40 |" in rows["small"]
    assert "| +0.00 ± 0.00 | 0 / 40 |" in rows["tiny"]


def test_compare_evals_refuses_evaluations_of_other_pages(tmp_path: Path) -> None:
    other = tmp_path / "eval.json"
    other.write_text('{"pages": [{"page": 999, "tier": "small", "char_precision": 1.0}]}')
    proc = tool("compare_evals.py", str(ROOT / "benchmarks/results/codec_eval/eval.json"),
                str(other))
    assert proc.returncode == 1 and "share no" in proc.stderr


def test_probe_reading_scores_every_codec_on_the_same_pages(tmp_path: Path) -> None:
    """Two codecs are scored on identical pages: the same weights named twice give the
    same row, and the written table is the one printed."""
    out = tmp_path / "reading.md"
    # the committed slice of an export: a clean clone has no data/synth and CI no wordfreq
    fixture = ROOT / "tests/encoder/fixtures/synth"
    proc = tool("probe_reading.py", "bundled", str(ROOT / "encoder/weights"),
                "--pages", "1", "--tiers", "tiny", "--out", str(out),
                env={"OPTICMEM_SYNTH_DIR": str(fixture)})
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 2
    cells = [row.split("|")[3:-1] for row in rows]
    assert cells[0] == cells[1]
    values = [float(c.strip().rstrip("%")) for c in cells[0]]
    losses, accs = values[0::2], values[1::2]
    assert all(0.0 < v < 20.0 for v in losses) and all(0.0 < a <= 100.0 for a in accs)
    assert out.read_text() in proc.stdout


def test_compare_evals_pools_further_pairs_as_more_pages(tmp_path: Path) -> None:
    import json

    old = ROOT / "benchmarks/results/codec_eval/eval.json"
    data = json.loads(old.read_text())
    for p in data["pages"]:
        if p["tier"] == "tiny":
            p["char_precision"] += 0.02
    new = tmp_path / "eval.json"
    new.write_text(json.dumps(data))
    proc = tool("compare_evals.py", str(old), str(new), str(old), str(old))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines()[2:]}
    assert "| 80 |" in rows["tiny"] and "| +1.00 ± " in rows["tiny"]  # half the pages +2
    odd = tool("compare_evals.py", str(old), str(new), str(old))
    assert odd.returncode == 2 and "OLD NEW pairs" in odd.stderr
