"""examples/langchain_agent.py runs offline and keeps its promises."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("langchain.agents")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langchain_agent.py"


def test_example_runs_within_budget(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("langchain_agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--turns", "30", "--budget", "3000"])
    out = capsys.readouterr().out
    assert summary["max_tokens_sent"] <= summary["budget"] == 3000
    assert summary["model_calls"] == 32  # 30 turns + the recall run's two calls
    assert summary["state_messages"] == summary["memory_turns"] == 64
    assert sum(n for t, n in summary["pages_per_tier"].items() if t != "out") >= 2
    assert "last answer: From memory: [1] page" in out
    assert out.count("run ") == 32
