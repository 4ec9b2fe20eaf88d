"""The recall-terms benchmark times this recall.py beside another copy and says whether
the two find the same terms."""

from __future__ import annotations

from pathlib import Path

from benchmarks.recall_terms import SAMPLES, main, passages
from opticmem import recall


def test_it_writes_a_table_of_every_script_against_another_copy(tmp_path: Path) -> None:
    out = tmp_path / "recall_terms.md"
    main(["--calls", "1", "--rounds", "1", "--against", recall.__file__,
          "--label", "itself", "--out", str(out)])
    table = out.read_text(encoding="utf-8")
    assert "| script | chars | µs per passage | itself µs | speed-up | same terms |" in table
    for name in SAMPLES:
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert row.endswith("| yes |"), row  # a copy of itself finds the same terms
    assert all(len(text) == 1_000 for text in passages().values())
