"""Benchmarks, each a module runnable as ``python -m benchmarks.<name>`` that prints a table
and writes ``benchmarks/results/<name>.md``. Not tests: nothing here asserts timings."""

from __future__ import annotations

from pathlib import Path


def publish(text: str, out: Path) -> None:
    """Print a benchmark's results table and write it to ``out``, making its folder."""
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
